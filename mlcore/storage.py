"""The lake: one interface over a local folder or an S3 bucket.

Every other module speaks in lake *keys* (``landing/b1/x.png``); this is the only module
that knows whether a key lands on disk or in S3. Keys are checked before they touch the
filesystem, so an uploaded object name can never escape the lake root.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import pyarrow.fs

    from mlcore.settings import Settings

PROTECTED_PREFIXES = ("landing/",)


class UnsafeKey(ValueError):
    """An object key that could escape the lake root or is otherwise malformed."""


def check_key(key: str) -> str:
    """Return ``key`` if it is a clean relative POSIX key, else raise :class:`UnsafeKey`."""
    if not key or "\x00" in key or "\\" in key or key.startswith("/"):
        raise UnsafeKey(f"unsafe object key {key!r}")
    parts = PurePosixPath(key).parts
    if any(p in ("..", ".") for p in parts) or "//" in key:
        raise UnsafeKey(f"unsafe object key {key!r}: relative segments are not allowed")
    return key


def _refuse_protected(key: str) -> None:
    if key.startswith(PROTECTED_PREFIXES):
        raise PermissionError(f"refusing to modify {key!r}: landing objects are read-only")


class Lake(Protocol):
    uri: str

    def read_bytes(self, key: str) -> bytes: ...
    def write_bytes(self, key: str, data: bytes) -> None: ...
    def write_if_absent(self, key: str, data: bytes) -> bool: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, key: str) -> None: ...
    def url(self, key: str) -> str: ...
    def arrow_fs(self) -> tuple[pyarrow.fs.FileSystem, str]: ...
    def gx_store_backend(self, prefix: str) -> dict: ...


@dataclass
class LocalLake:
    """A lake in a local folder. Writes go to a temp file then ``os.replace``: never half-visible."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if self.root not in path.parents:
            raise UnsafeKey(f"object key {key!r} resolves outside the lake")
        return path

    def read_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if path.exists():
            _refuse_protected(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)

    def write_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            os.link(tmp, path)  # atomic create-if-absent; fails when the key exists
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if not base.is_dir():
            return []
        keys = (
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )
        return sorted(keys)

    def delete(self, key: str) -> None:
        _refuse_protected(key)
        self._path(key).unlink(missing_ok=True)

    def url(self, key: str) -> str:
        return self._path(key).as_uri()

    def arrow_fs(self) -> tuple[pyarrow.fs.FileSystem, str]:
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem(), str(self.root)

    def gx_store_backend(self, prefix: str) -> dict:
        return {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(self.root / check_key(prefix)),
        }


@dataclass
class S3Lake:
    """A lake under ``s3://bucket/prefix`` spoken to with boto3 (retry mode ``standard``)."""

    bucket: str
    prefix: str
    endpoint_url: str | None
    access_key_id: str | None
    secret_access_key: str | None
    region: str = "us-east-1"
    max_attempts: int = 4
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        import boto3
        from botocore.config import Config

        self.prefix = self.prefix.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url or None,
            aws_access_key_id=self.access_key_id or None,
            aws_secret_access_key=self.secret_access_key or None,
            region_name=self.region,
            config=Config(
                retries={"mode": "standard", "max_attempts": self.max_attempts},
                connect_timeout=self.timeout_s,
                read_timeout=self.timeout_s,
            ),
        )

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey as exc:
            raise FileNotFoundError(self.url(key)) from exc

    def write_bytes(self, key: str, data: bytes) -> None:
        if self.exists(key):
            _refuse_protected(key)
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def write_if_absent(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*"
            )
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                return False
            raise

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix.rstrip("/")) + "/" if prefix.strip("/") else (
            f"{self.prefix}/" if self.prefix else ""
        )
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=full
        ):
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    def delete(self, key: str) -> None:
        _refuse_protected(key)
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def arrow_fs(self) -> tuple[pyarrow.fs.FileSystem, str]:
        import pyarrow.fs

        endpoint = self.endpoint_url or ""
        fs = pyarrow.fs.S3FileSystem(
            access_key=self.access_key_id or None,
            secret_key=self.secret_access_key or None,
            region=self.region,
            endpoint_override=endpoint.split("://", 1)[-1] or None,
            scheme=endpoint.split("://", 1)[0] if "://" in endpoint else "https",
        )
        return fs, f"{self.bucket}/{self.prefix}".rstrip("/")

    def gx_store_backend(self, prefix: str) -> dict:
        return {
            "class_name": "TupleS3StoreBackend",
            "bucket": self.bucket,
            "prefix": self._key(prefix),
            "boto3_options": {"endpoint_url": self.endpoint_url} if self.endpoint_url else {},
        }


def open_lake(settings: Settings) -> Lake:
    """The lake the settings point at: ``s3://`` gives an :class:`S3Lake`, anything else a folder."""
    uri = settings.resolved_lake_uri
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        return S3Lake(
            bucket=bucket,
            prefix=prefix,
            endpoint_url=settings.s3_endpoint_url or None,
            access_key_id=settings.s3_access_key_id.get_secret_value(),
            secret_access_key=settings.s3_secret_access_key.get_secret_value(),
            region=settings.s3_region,
            max_attempts=settings.s3_max_attempts,
            timeout_s=settings.s3_timeout_s,
        )
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    return LocalLake(Path(path))


def read_parquet(lake: Lake, key: str):
    """Read one Parquet object from the lake into a pyarrow Table."""
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(lake.read_bytes(key)))


def parquet_bytes(table, **kwargs) -> bytes:
    """Serialize a pyarrow Table to Parquet bytes (zstd), ready for an atomic ``write_bytes``."""
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", **kwargs)
    return buf.getvalue()
