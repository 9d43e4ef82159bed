"""The lake: one interface over a local folder or an S3 bucket.

Every other module speaks in lake *keys* (``landing/b1/x.png``); this is the only module
that knows whether a key lands on disk or in S3. Keys are checked before they touch the
filesystem, so an uploaded object name can never escape the lake root.
"""

from __future__ import annotations

import io
import mimetypes
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlcore.layout import LANDING

if TYPE_CHECKING:
    import pyarrow.fs

    from mlcore.settings import Settings

PROTECTED_PREFIXES = (f"{LANDING}/",)  # user uploads: the platform never changes them
# The lake's own temporary files live under this top-level folder of a local lake, never
# next to user data: an upload named ``.tmp-x.png`` is user data like any other, and a
# killed write leaves its debris here, not in ``quarantine/<batch>/``.
TMP_DIR = ".mlcore-tmp"
CHUNK_BYTES = 1 << 20


class UnsafeKey(ValueError):
    """An object key that could escape the lake root or is otherwise malformed."""


def check_key(key: str) -> str:
    """Return ``key`` if it is a clean relative POSIX key, else raise :class:`UnsafeKey`."""
    if not key or "\x00" in key or "\\" in key or key.startswith("/"):
        raise UnsafeKey(f"unsafe object key {key!r}")
    # Split literally: PurePosixPath would drop "." and trailing "/" segments, and on S3
    # "a", "./a" and "a/" are three different objects.
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise UnsafeKey(f"unsafe object key {key!r}: empty or relative segments are not allowed")
    return key


def _refuse_protected(key: str) -> None:
    if key.startswith(PROTECTED_PREFIXES):
        raise PermissionError(f"refusing to modify {key!r}: landing objects are read-only")


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object, from metadata only (stat, ListObjects): no byte is read.

    ``version`` changes whenever the object's content may have (mtime and inode locally,
    the ETag on S3). ``unsafe`` names why the entry cannot be read as a lake object
    (a symlink, a special file, a key that fails :func:`check_key`); such entries are
    still listed so that every object in a batch is accounted for.
    """

    key: str
    size: int
    version: str
    unsafe: str | None = None


class Lake(Protocol):
    uri: str

    def read_bytes(self, key: str) -> bytes: ...
    def write_bytes(self, key: str, data: bytes) -> None: ...
    def write_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if absent. True when the key now holds exactly ``data``: created
        here, or by an identical earlier write (a retried task or request); False when it
        holds something else."""
        ...

    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def list_info(self, prefix: str) -> list[ObjectInfo]:
        """Every entry under ``prefix/`` with its size and version, unsafe ones included."""
        ...

    def list_dirs(self, prefix: str) -> list[str]:
        """Names of the folders one level under ``prefix/`` (S3: ``CommonPrefixes`` with a
        ``/`` delimiter), sorted: one request per 1,000 folders, never one per object."""
        ...

    def read_chunks(self, key: str, chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The object's bytes in chunks: hashing a large object never holds it whole."""
        ...

    def delete(self, key: str) -> None: ...
    def url(self, key: str) -> str: ...
    def arrow_fs(self) -> tuple[pyarrow.fs.FileSystem, str]: ...
    def put_upload(self, key: str, data: bytes) -> None: ...
    def digest(self, key: str) -> tuple[int, str] | None: ...


@dataclass
class LocalLake:
    """A lake in a local folder. Writes go to a temp file then ``os.replace``: never half-visible."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        if key.split("/", 1)[0] == TMP_DIR:
            raise UnsafeKey(f"object key {key!r} is inside the lake's temporary folder")
        path = (self.root / check_key(key)).resolve()
        if self.root not in path.parents:
            raise UnsafeKey(f"object key {key!r} resolves outside the lake")
        return path

    def _tmp_file(self, data: bytes) -> str:
        tmp_dir = self.root / TMP_DIR
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix="w-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return tmp

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if path.exists():
            _refuse_protected(key)
        self._replace(path, data)

    def _replace(self, path: Path, data: bytes) -> None:
        """Put ``data`` at ``path`` atomically, through a temp file in the lake's own folder
        (a killed write leaves nothing beside user data)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp_file(data)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    def write_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp_file(data)
        try:
            os.link(tmp, path)  # atomic create-if-absent; fails when the key exists
            return True
        except FileExistsError:
            return path.read_bytes() == data
        finally:
            os.unlink(tmp)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        return [info.key for info in self.list_info(prefix) if info.unsafe is None]

    def list_info(self, prefix: str) -> list[ObjectInfo]:
        if prefix.strip("/"):
            check_key(prefix.strip("/"))
            base = self.root / prefix.strip("/")
        else:
            base = self.root
        # lstat, never follow: a symlink in a batch is reported, not read through.
        if base.is_symlink() or not base.is_dir():
            return []
        out = []
        for folder, dirs, files in os.walk(base, followlinks=False):
            if Path(folder) == self.root:
                dirs[:] = [d for d in dirs if d != TMP_DIR]
            for name in [*files, *(d for d in dirs if os.path.islink(os.path.join(folder, d)))]:
                path = os.path.join(folder, name)
                key = Path(path).relative_to(self.root).as_posix()
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    # Renamed or removed since the walk saw it (e.g. a table writer's temp
                    # log file): like an S3 listing, report only what still exists.
                    continue
                unsafe = None
                if stat.S_ISLNK(st.st_mode):
                    unsafe = "symlink"
                elif not stat.S_ISREG(st.st_mode):
                    unsafe = "not a regular file"
                else:
                    try:
                        check_key(key)
                    except UnsafeKey as exc:
                        unsafe = str(exc)
                out.append(ObjectInfo(key, st.st_size, f"{st.st_mtime_ns}-{st.st_ino}", unsafe))
        return sorted(out, key=lambda i: i.key)

    def list_dirs(self, prefix: str) -> list[str]:
        base = self.root / check_key(prefix.strip("/"))
        if base.is_symlink() or not base.is_dir():
            return []
        # A symlinked folder is not followed (list_info reports it as an unsafe entry).
        return sorted(e.name for e in os.scandir(base) if e.is_dir(follow_symlinks=False))

    def read_chunks(self, key: str, chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
        with self._path(key).open("rb") as fh:
            while block := fh.read(chunk):
                yield block

    def delete(self, key: str) -> None:
        path = self._path(key)
        _refuse_protected(key)
        path.unlink(missing_ok=True)

    def url(self, key: str) -> str:
        return self._path(key).as_uri()

    def arrow_fs(self) -> tuple[pyarrow.fs.FileSystem, str]:
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem(), str(self.root)

    def put_upload(self, key: str, data: bytes) -> None:
        """The uploader's write (``mlcore.upload`` only): create or replace an object of a
        landing batch that has no ``_READY`` yet, which the platform has not read."""
        self._replace(self._path(key), data)

    def digest(self, key: str) -> tuple[int, str] | None:
        """(size, sha256 hex) of the stored object, read back from disk; None when absent."""
        import hashlib

        path = self._path(key)
        if not path.is_file():
            return None
        data = path.read_bytes()
        return len(data), hashlib.sha256(data).hexdigest()


@dataclass
class S3Lake:
    """A lake under ``s3://bucket/prefix`` spoken to with boto3 (retry mode ``standard``).

    Writes are single ``PutObject`` calls, so an object is either absent or whole. Landing
    objects are written with ``If-None-Match: *``: an existing upload is never replaced.
    """

    bucket: str
    prefix: str
    endpoint_url: str | None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    region: str = "us-east-1"
    max_attempts: int = 4  # every try counts, the first included (boto3 total_max_attempts)
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        import boto3
        from botocore.config import Config

        self.prefix = self.prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url or None,
            aws_access_key_id=self.access_key_id or None,
            aws_secret_access_key=self.secret_access_key or None,
            region_name=self.region,
            config=Config(
                retries={"mode": "standard", "total_max_attempts": self.max_attempts},
                connect_timeout=self.timeout_s,
                read_timeout=self.timeout_s,
            ),
        )

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @staticmethod
    def _code(exc: Exception) -> str:
        return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))

    def _put(self, key: str, data: bytes, **extra: Any) -> None:
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                               ContentType=content_type, **extra)

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if self._code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(self.url(key)) from exc
            raise

    def write_bytes(self, key: str, data: bytes) -> None:
        if key.startswith(PROTECTED_PREFIXES):
            # Create-only, atomically: a second writer of the same landing key is refused.
            if not self.write_if_absent(key, data):
                _refuse_protected(key)
            return
        self._put(key, data)

    def write_if_absent(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        for attempt in range(self.max_attempts):
            try:
                self._put(key, data, IfNoneMatch="*")
                return True
            except ClientError as exc:
                code = self._code(exc)
                if code in ("PreconditionFailed", "412"):
                    # Possibly our own write: a PUT whose answer timed out may still have
                    # landed before boto3 retried it. Identical bytes mean it did.
                    return self.read_bytes(key) == data
                # 409: another conditional write of this key is in flight; S3 asks to retry.
                if code != "ConditionalRequestConflict" or attempt == self.max_attempts - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def list(self, prefix: str) -> list[str]:
        return [info.key for info in self.list_info(prefix) if info.unsafe is None]

    def list_info(self, prefix: str) -> list[ObjectInfo]:
        if prefix.strip("/"):
            full = self._key(prefix.strip("/")) + "/"
        else:
            full = f"{self.prefix}/" if self.prefix else ""
        strip = len(self.prefix) + 1 if self.prefix else 0
        out: list[ObjectInfo] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=full
        ):
            for obj in page.get("Contents", []):
                # Keys ending in "/" are "folder" markers some S3 tools create, not objects.
                if obj["Key"].endswith("/"):
                    continue
                key = obj["Key"][strip:]
                try:
                    check_key(key)
                    unsafe = None
                except UnsafeKey as exc:
                    unsafe = str(exc)
                out.append(ObjectInfo(key, int(obj["Size"]), str(obj.get("ETag", "")).strip('"'),
                                      unsafe))
        return sorted(out, key=lambda i: i.key)

    def list_dirs(self, prefix: str) -> list[str]:
        full = self._key(prefix.strip("/")) + "/"
        names = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=full, Delimiter="/"
        ):
            names += [p["Prefix"][len(full):].rstrip("/") for p in page.get("CommonPrefixes", [])]
        return sorted(n for n in names if n)

    def read_chunks(self, key: str, chunk: int = CHUNK_BYTES) -> Iterator[bytes]:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except ClientError as exc:
            if self._code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(self.url(key)) from exc
            raise
        yield from body.iter_chunks(chunk)

    def delete(self, key: str) -> None:
        full = self._key(key)
        _refuse_protected(key)
        self.client.delete_object(Bucket=self.bucket, Key=full)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def arrow_fs(self) -> tuple[pyarrow.fs.FileSystem, str]:
        import pyarrow.fs

        endpoint = self.endpoint_url or ""
        scheme, _, host = endpoint.rpartition("://")
        fs = pyarrow.fs.S3FileSystem(
            access_key=self.access_key_id or None,
            secret_key=self.secret_access_key or None,
            region=self.region,
            endpoint_override=host or None,
            scheme=scheme or "https",
            connect_timeout=self.timeout_s,
            request_timeout=self.timeout_s,
            retry_strategy=pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=self.max_attempts),
        )
        return fs, f"{self.bucket}/{self.prefix}".rstrip("/")

    def put_upload(self, key: str, data: bytes) -> None:
        """The uploader's write (``mlcore.upload`` only): create or replace an object of a
        landing batch that has no ``_READY`` yet. The server checks the body's SHA-256
        (``x-amz-checksum-sha256``) and keeps it, so :meth:`digest` can answer from a HEAD."""
        self._put(key, data, ChecksumAlgorithm="SHA256")

    def digest(self, key: str) -> tuple[int, str] | None:
        """(size, sha256 hex) of the stored object; None when absent. The server's stored
        SHA-256 when it kept one, else the object is read back and hashed."""
        import base64
        import hashlib

        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key),
                                           ChecksumMode="ENABLED")
        except ClientError as exc:
            if self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        stored = head.get("ChecksumSHA256") or ""
        if stored and "-" not in stored:  # "-N": a multipart composite, not the object's hash
            return head["ContentLength"], base64.b64decode(stored).hex()
        data = self.read_bytes(key)
        return len(data), hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class S3Access:
    """Where the S3 lake is and the keys to it (never printed: the keys are not in the repr)."""

    endpoint_url: str | None
    region: str
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)


def s3_access(settings: Settings) -> S3Access:
    """The S3 endpoint, region and keys: from the Airflow Connection ``settings.s3_conn_id``
    when one is named, else from the ``s3_*`` settings.

    The Connection is read by the Amazon provider's hook, so it is parsed as every other AWS
    Connection is (login/password or extra keys, ``endpoint_url`` and ``region_name`` in the
    extra) and comes from whatever secrets backend Airflow is configured with. Inside a task,
    Airflow masks its password in the task log.
    """
    if settings.s3_conn_id:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        conn = S3Hook(aws_conn_id=settings.s3_conn_id).conn_config
        return S3Access(
            endpoint_url=conn.get_service_endpoint_url("s3") or settings.s3_endpoint_url or None,
            region=conn.region_name or settings.s3_region,
            access_key_id=conn.aws_access_key_id,
            secret_access_key=conn.aws_secret_access_key,
        )
    return S3Access(
        endpoint_url=settings.s3_endpoint_url or None,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id.get_secret_value() or None,
        secret_access_key=settings.s3_secret_access_key.get_secret_value() or None,
    )


def open_lake(settings: Settings) -> Lake:
    """The lake the settings point at: ``s3://`` gives an :class:`S3Lake`, anything else a folder."""
    uri = settings.resolved_lake_uri
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        access = s3_access(settings)
        return S3Lake(
            bucket=bucket,
            prefix=prefix,
            endpoint_url=access.endpoint_url,
            access_key_id=access.access_key_id,
            secret_access_key=access.secret_access_key,
            region=access.region,
            max_attempts=settings.s3_max_attempts,
            timeout_s=settings.s3_timeout_s,
        )
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    return LocalLake(Path(path))


def lake_client_env(settings: Settings) -> dict[str, str]:
    """Environment variables other processes need to reach the lake with their own S3 clients.

    MLflow writes run artifacts to ``<lake>/mlflow`` with its own boto3 client, configured
    only through ``MLFLOW_S3_ENDPOINT_URL`` and the ``AWS_*`` variables; a folder lake needs
    nothing. Values come from :func:`s3_access`, so they win over whatever the caller inherited.
    """
    if not settings.resolved_lake_uri.startswith("s3://"):
        return {}
    access = s3_access(settings)
    env = {"AWS_DEFAULT_REGION": access.region}
    if access.endpoint_url:
        env["MLFLOW_S3_ENDPOINT_URL"] = access.endpoint_url
    if access.access_key_id and access.secret_access_key:
        env["AWS_ACCESS_KEY_ID"] = access.access_key_id
        env["AWS_SECRET_ACCESS_KEY"] = access.secret_access_key
    return env


def read_parquet(lake: Lake, key: str, columns: list[str] | None = None):
    """Read one Parquet object (all columns, or ``columns``) from the lake into a pyarrow Table."""
    return parquet_table(lake.read_bytes(key), columns)


def read_columns(lake: Lake, key: str, columns: list[str] | None = None):
    """``columns`` (default: all) of one Parquet object, read through the lake's Arrow file
    system: only those columns' bytes are fetched (ranged reads on S3), and no copy of the
    file is held beside the table."""
    import pyarrow.parquet as pq

    fs, root = lake.arrow_fs()
    with fs.open_input_file(f"{root}/{check_key(key)}") as fh:
        return pq.ParquetFile(fh).read(columns=columns)


def parquet_table(data: bytes, columns: list[str] | None = None):
    """Parquet bytes (already read, e.g. to check their sha256) -> a pyarrow Table."""
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(data), columns=columns)


def parquet_bytes(table, **kwargs) -> bytes:
    """Serialize a pyarrow Table to Parquet bytes (zstd), ready for an atomic ``write_bytes``."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", **kwargs)
    return buf.getvalue()


# --- Open table formats (Delta Lake) ---------------------------------------------------------


@dataclass(frozen=True)
class TableLocation:
    """Where a table under the lake lives, as a table library wants it: a URI plus
    ``storage_options`` (endpoint and keys; never in the repr, so never in a log)."""

    uri: str
    storage_options: dict[str, str] | None = field(default=None, repr=False)


def table_location(lake: Lake, key: str) -> TableLocation:
    """The table folder ``key`` of ``lake`` for ``deltalake``: a local path, or ``s3://`` with
    the lake's own endpoint, keys and timeouts (delta-rs has its own S3 client, not boto3).

    No locking option is set: delta-rs 1.x commits on S3 with a conditional
    ``PutObject`` (``If-None-Match: *``), so concurrent writers need no lock service.
    """
    check_key(key.strip("/"))
    if isinstance(lake, S3Lake):
        # The same retry budget as boto3's (attempts x timeout), not object_store's 10 retries
        # over up to 3 minutes: an outage longer than the budget fails the task, as elsewhere.
        options = {"AWS_REGION": lake.region,
                   "timeout": f"{lake.timeout_s:g}s", "connect_timeout": f"{lake.timeout_s:g}s",
                   "max_retries": str(max(0, lake.max_attempts - 1)),
                   "retry_timeout": f"{lake.timeout_s * lake.max_attempts:g}s"}
        if lake.endpoint_url:
            options["AWS_ENDPOINT_URL"] = lake.endpoint_url
            if lake.endpoint_url.startswith("http://"):
                options["AWS_ALLOW_HTTP"] = "true"
        if lake.access_key_id and lake.secret_access_key:
            options["AWS_ACCESS_KEY_ID"] = lake.access_key_id
            options["AWS_SECRET_ACCESS_KEY"] = lake.secret_access_key
        return TableLocation(lake.url(key.strip("/")), options)
    return TableLocation(str(lake._path(key.strip("/"))), None)
