"""Run a real Airflow (and Redis, and headless Chromium) for the live integration tests.

Every server is a child process in its own process group, logging to
``test-artifacts/<name>/``; the context managers always stop what they started. Airflow
runs as separate components (api-server, scheduler, dag-processor and, for Celery,
workers) on free loopback ports over a temp ``MLCORE_HOME``, with the committed
``airflow.cfg`` and the environment from :func:`mlcore.airflow_local.airflow_env`.

Scheduled runs are switched off (``[scheduler] use_job_schedule = False``): the tests
trigger every run themselves through the REST API, exactly as the UI does, so no cron or
Asset-triggered run can race them. No triggerer runs: no task here defers.

This module is also the Celery workers' ``[core] hostname_callable``
(:func:`worker_hostname`), so that two workers on one machine report different hostnames
on their task instances. Keep its top-level imports light.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlcore.settings import Settings

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
ARTIFACTS = REPO_ROOT / "test-artifacts"
TERMINAL_RUN_STATES = {"success", "failed"}
MLCORE_DAGS = ("ingest_landing", "retrain_model", "batch_score")


def worker_hostname() -> str:
    """``[core] hostname_callable`` for a worker: its ``MLCORE_TEST_WORKER_HOSTNAME``."""
    return os.environ.get("MLCORE_TEST_WORKER_HOSTNAME") or socket.getfqdn()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 1.0):
    """Poll ``predicate`` until it returns something truthy; raise ``TimeoutError`` after ``timeout``.

    Exceptions from the predicate count as "not yet", except :class:`ServiceDied`.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except ServiceDied:
            raise
        except Exception as exc:  # noqa: BLE001 - "not ready yet"; reported on timeout
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f}s waiting for {what}"
                               + (f" (last error: {last!r})" if last else ""))
        time.sleep(interval)


class ServiceDied(RuntimeError):
    """A background server exited while the test still needed it."""


class Service:
    """One background process, leader of its own process group, output to a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path,
                 cwd: Path | None = None):
        self.name, self.args, self.log_path = name, args, log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise ServiceDied(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")

    def wait_for_log(self, text: str, timeout: float) -> None:
        wait_until(lambda: self.check() or text in self.tail(400), timeout,
                   f"{self.name} to log {text!r}", interval=1)

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the process group, SIGKILL what is left after ``timeout``."""
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Children (task processes, uvicorn or celery pool workers) may outlive the leader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._log.close()


# --- Airflow ----------------------------------------------------------------------------

_DB_TEMPLATE: Path | None = None


def init_db(env: dict[str, str]) -> None:
    """A migrated metadata DB at ``$AIRFLOW_HOME/airflow.db``: migrated once per session, then copied."""
    from mlcore.airflow_local import airflow

    global _DB_TEMPLATE
    target = Path(env["AIRFLOW_HOME"]) / "airflow.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    if _DB_TEMPLATE is None:
        done = airflow(env, "db", "migrate", check=False, capture=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        folder = Path(tempfile.mkdtemp(prefix="mlcore-airflow-db-"))
        atexit.register(shutil.rmtree, folder, True)
        shutil.copy2(target, folder / "airflow.db")
        _DB_TEMPLATE = folder / "airflow.db"
    else:
        shutil.copy2(_DB_TEMPLATE, target)


class Airflow:
    """A running Airflow deployment and a small REST API v2 client for it.

    With ``credentials`` (a deployment with real logins), API calls carry the bearer token
    ``POST /auth/token`` issues for them; otherwise every caller is an admin.
    """

    def __init__(self, env: dict[str, str], port: int, log_dir: Path,
                 credentials: tuple[str, str] | None = None):
        self.env, self.port, self.log_dir = env, port, log_dir
        self.credentials = credentials
        self._token: str | None = None
        self.services: list[Service] = []

    def token(self) -> str:
        """An API token for ``credentials``, as ``curl -X POST /auth/token`` gets one."""
        import requests

        if self._token is None:
            username, password = self.credentials
            resp = requests.post(f"{self.url}/auth/token", timeout=30,
                                 json={"username": username, "password": password})
            if resp.status_code >= 400:
                raise AssertionError(f"POST /auth/token: {resp.status_code} {resp.text[:300]}")
            self._token = resp.json()["access_token"]
        return self._token

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # processes
    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Service:
        exe = shutil.which("airflow", path=self.env["PATH"]) or "airflow"
        service = Service(name, [exe, *args], env or self.env, self.log_dir / f"{name}.log")
        self.services.append(service)
        return service

    def check(self) -> None:
        for service in self.services:
            service.check()

    def stop(self) -> None:
        # Workers and the scheduler first, the API server (which they report to) last.
        for service in reversed(self.services):
            service.stop()

    def logs(self, lines: int = 25) -> str:
        return "\n".join(f"--- {s.name} ({s.log_path}):\n{s.tail(lines)}" for s in self.services)

    # REST API v2
    def api(self, method: str, path: str, **kwargs) -> Any:
        import requests

        headers = dict(kwargs.pop("headers", {}))
        if self.credentials:
            headers.setdefault("Authorization", f"Bearer {self.token()}")
        resp = requests.request(method, f"{self.url}/api/v2/{path.lstrip('/')}",
                                timeout=kwargs.pop("timeout", 60), headers=headers, **kwargs)
        if resp.status_code >= 400:
            raise AssertionError(f"{method} /api/v2/{path}: {resp.status_code} {resp.text[:1000]}")
        if "json" in resp.headers.get("content-type", ""):
            return resp.json()
        return resp.text

    def wait_ready(self, dag_ids: tuple[str, ...] = MLCORE_DAGS, timeout: float = 240) -> None:
        """API up, scheduler and DAG processor heartbeating, and ``dag_ids`` parsed."""
        import requests

        def ready() -> bool:
            self.check()
            health = requests.get(f"{self.url}/api/v2/monitor/health", timeout=10).json()
            if any((health.get(c) or {}).get("status") != "healthy"
                   for c in ("metadatabase", "scheduler", "dag_processor")):
                return False
            found = {d["dag_id"] for d in self.api("GET", "dags", params={"limit": 100})["dags"]}
            return set(dag_ids) <= found

        try:
            wait_until(ready, timeout, "Airflow to come up with the DAGs parsed", interval=2)
        except TimeoutError as exc:
            errors = ""
            with contextlib.suppress(Exception):
                errors = json.dumps(self.api("GET", "importErrors"), indent=1)[:3000]
            raise TimeoutError(f"{exc}\nimport errors: {errors}\n{self.logs()}") from None

    def unpause(self, dag_id: str) -> None:
        dag = self.api("PATCH", f"dags/{dag_id}", json={"is_paused": False})
        assert dag["is_paused"] is False

    def trigger(self, dag_id: str, logical_date: str | None, conf: dict | None = None) -> dict:
        """What the UI's "Trigger" button posts."""
        return self.api("POST", f"dags/{dag_id}/dagRuns",
                        json={"logical_date": logical_date, "conf": conf or {}})

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                        params={"limit": 1000})["task_instances"]

    def task_log(self, ti: dict) -> str:
        try:
            return self.api(
                "GET", f"dags/{ti['dag_id']}/dagRuns/{ti['dag_run_id']}/taskInstances/"
                f"{ti['task_id']}/logs/{max(ti['try_number'], 1)}",
                params={"map_index": ti["map_index"]}, headers={"Accept": "text/plain"})
        except AssertionError as exc:
            return str(exc)

    def wait_run(self, dag_id: str, run_id: str, timeout: float) -> dict:
        """Poll until the run is success or failed; on timeout, say where each task is."""
        def finished() -> dict | None:
            self.check()
            run = self.dag_run(dag_id, run_id)
            return run if run["state"] in TERMINAL_RUN_STATES else None

        try:
            return wait_until(finished, timeout, f"{dag_id} run {run_id}", interval=3)
        except TimeoutError as exc:
            states = [(t["task_id"], t["map_index"], t["state"])
                      for t in self.task_instances(dag_id, run_id)]
            raise TimeoutError(f"{exc}; task states: {states}\n{self.logs()}") from None

    def run_dag(self, dag_id: str, logical_date: str | None, timeout: float,
                expect: str | None = "success") -> tuple[dict, list[dict]]:
        """Unpause, trigger, wait; return the finished run and its task instances.

        Unless ``expect`` is None, a run that ends otherwise raises with the failed tasks' logs.
        """
        self.unpause(dag_id)
        run = self.wait_run(dag_id, self.trigger(dag_id, logical_date)["dag_run_id"], timeout)
        tis = self.task_instances(dag_id, run["dag_run_id"])
        if expect is not None and run["state"] != expect:
            failed = [t for t in tis if t["state"] not in ("success", "skipped")]
            details = "\n".join(
                f"=== {t['task_id']}[{t['map_index']}] {t['state']}:\n"
                + "\n".join(self.task_log(t).splitlines()[-40:]) for t in failed[:3])
            raise AssertionError(f"{dag_id} run ended {run['state']}, expected {expect}:\n"
                                 f"{[(t['task_id'], t['map_index'], t['state']) for t in tis]}\n"
                                 f"{details}")
        return run, tis


def airflow_test_env(settings: Settings, port: int, airflow_home: Path,
                     extra: dict[str, str] | None = None) -> dict[str, str]:
    """The project's Airflow environment, made private to one test deployment."""
    from mlcore.airflow_local import airflow_env

    url = f"http://127.0.0.1:{port}"
    return airflow_env(settings, {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        # Shared by every component: tokens the scheduler issues must verify in the API server.
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        # Links in task logs and XCom point at this server's Data Docs route.
        "MLCORE_DATA_DOCS_URL": f"{url}/data-docs",
        **(extra or {}),
    })


@contextlib.contextmanager
def running_airflow(settings: Settings, name: str, *, airflow_home: Path | None = None,
                    extra_env: dict[str, str] | None = None,
                    credentials: tuple[str, str] | None = None,
                    timeout: float = 240) -> Iterator[Airflow]:
    """api-server + scheduler + dag-processor over ``settings.home``; always stopped.

    ``credentials`` (user, password) turns real logins on: that one admin user, no anonymous
    admin, as in ``make up``; by default every caller is an admin.
    """
    port = free_port()
    home = Path(airflow_home or Path(settings.home) / "airflow").resolve()
    if credentials:
        home.mkdir(parents=True, exist_ok=True)
        passwords = home / "passwords.json"
        passwords.write_text(json.dumps({credentials[0]: credentials[1]}))
        extra_env = {
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{credentials[0]}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            **(extra_env or {}),
        }
    env = airflow_test_env(settings, port, home, extra_env)
    log_dir = ARTIFACTS / name
    shutil.rmtree(log_dir, ignore_errors=True)
    init_db(env)
    deployment = Airflow(env, port, log_dir, credentials)
    try:
        deployment.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(port),
                         "--workers", "1")
        deployment.start("scheduler", "scheduler")
        deployment.start("dag-processor", "dag-processor")
        deployment.wait_ready(timeout=timeout)
        yield deployment
    finally:
        deployment.stop()


def start_celery_worker(deployment: Airflow, hostname: str) -> Service:
    """``airflow celery worker`` (concurrency 1) whose task instances report ``hostname``."""
    env = {
        **deployment.env,
        "MLCORE_TEST_WORKER_HOSTNAME": hostname,
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{Path(__file__).stem}.worker_hostname",
        "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), deployment.env.get("PYTHONPATH")) if p),
    }
    return deployment.start(f"worker-{hostname}", "celery", "worker", "--celery-hostname",
                            f"{hostname}@%h", "--concurrency", "1", "--skip-serve-logs", env=env)


# --- Redis ------------------------------------------------------------------------------

@contextlib.contextmanager
def running_redis(workdir: Path, log_dir: Path, timeout: float = 30) -> Iterator[str]:
    """A throwaway ``redis-server`` on a free loopback port; yields its URL."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    service = Service("redis", [shutil.which("redis-server") or "/usr/bin/redis-server",
                                "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(workdir)],
                      dict(os.environ), log_dir / "redis.log")

    def pong() -> bool:
        service.check()
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    try:
        wait_until(pong, timeout, "redis-server", interval=0.3)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        service.stop()


# --- headless Chromium over the DevTools protocol ---------------------------------------

class Chromium:
    """Headless Chromium driven over CDP: open a page, wait for text, dump the DOM, screenshot.

    ``offline=True`` blocks every request that would leave loopback: no host name but
    ``localhost`` resolves, and anything else (an IP literal) goes to a proxy port nobody
    listens on. Every request the page sends is recorded in :attr:`requests` either way.
    """

    def __init__(self, log_path: Path, width: int = 1400, height: int = 900, timeout: float = 90,
                 offline: bool = False):
        import requests
        from websockets.sync.client import connect

        self.profile = Path(tempfile.mkdtemp(prefix="mlcore-chromium-"))
        self.requests: list[str] = []
        exe = shutil.which("chromium") or "/usr/bin/chromium"
        blocked = [
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
            f"--proxy-server=http://127.0.0.1:{free_port()}",
            "--proxy-bypass-list=127.0.0.1;localhost",
        ] if offline else []
        self.service = Service("chromium", [
            exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={self.profile}",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
            f"--window-size={width},{height}", *blocked, "about:blank",
        ], dict(os.environ), log_path)
        self._id = 0
        try:
            port_file = self.profile / "DevToolsActivePort"

            def devtools_port() -> int | None:
                self.service.check()
                lines = port_file.read_text().split() if port_file.exists() else []
                return int(lines[0]) if lines else None

            port = wait_until(devtools_port, timeout, "Chromium's DevTools port", interval=0.5)
            page = wait_until(
                lambda: next(t for t in requests.get(f"http://127.0.0.1:{port}/json/list",
                                                     timeout=10).json() if t["type"] == "page"),
                timeout, "a Chromium page target")
            self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout)
            self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
            self.send("Network.enable")
        except BaseException:
            self.close()
            raise

    def send(self, method: str, timeout: float = 60, **params) -> dict:
        self._id += 1
        msg_id = self._id
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if msg.get("method") == "Network.requestWillBeSent":
                self.requests.append(msg["params"]["request"]["url"])
            if msg.get("id") == msg_id:  # other events: ignored
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def goto(self, url: str, timeout: float = 60) -> None:
        self.evaluate("window.__previousPage = true")  # gone once the new document is up
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise AssertionError(f"cannot open {url}: {result['errorText']}")
        wait_until(lambda: self.evaluate(
            "window.__previousPage === undefined && document.readyState === 'complete'"),
            timeout, f"{url} to load", interval=0.5)

    def login(self, base_url: str, username: str, password: str, timeout: float = 90) -> None:
        """Log in through the Airflow UI's login form, as a person does; it sets the ``_token`` cookie."""
        self.goto(f"{base_url}/auth/login", timeout)
        wait_until(lambda: self.evaluate("document.querySelectorAll('input').length >= 2"),
                   timeout, "the login form")
        for index, value in enumerate((username, password)):
            self.evaluate(f"document.querySelectorAll('input')[{index}].focus()")
            self.send("Input.insertText", text=value)
        self.evaluate("document.querySelector('button[type=submit]').click()")
        wait_until(lambda: any(c["name"] == "_token"
                               for c in self.send("Network.getCookies")["cookies"]),
                   timeout, "the login to set the _token cookie")

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def dom(self) -> str:
        return self.evaluate("document.documentElement.outerHTML") or ""

    def wait_for_text(self, *needles: str, timeout: float = 60) -> str:
        """Wait until the rendered page shows every needle (a single-page app renders late)."""
        try:
            return wait_until(lambda: (t := self.text()) and all(n in t for n in needles) and t,
                              timeout, f"page text {needles}", interval=0.5)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; page text was:\n{self.text()[:2000]}") from None

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        self.service.stop(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)


@contextlib.contextmanager
def chromium(log_path: Path, offline: bool = False) -> Iterator[Chromium]:
    browser = Chromium(log_path, offline=offline)
    try:
        yield browser
    finally:
        browser.close()
