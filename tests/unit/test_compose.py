"""Static checks of docker-compose.yaml, .env and the Dockerfile.

No Docker engine runs on the development machines, so the deployment files are checked
here, as text and parsed YAML: the services exist, images are pinned, every ``MLCORE_*``
name is a real setting, the code is mounted where Airflow looks, long-running services
have healthchecks, no secret is written in the compose file and every ``${VAR}`` it uses
has a development default in ``.env``.
"""

from __future__ import annotations

import re
from functools import cache

import pytest
import yaml

from mlcore.settings import REPO_ROOT, Settings

COMPOSE = REPO_ROOT / "docker-compose.yaml"
DOTENV = REPO_ROOT / ".env"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DEPLOYMENT_DOC = REPO_ROOT / "docs" / "deployment.md"

REQUIRED_SERVICES = (
    "postgres",
    "redis",
    "minio",
    "minio-init",
    "mlflow",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
ONE_SHOT_SERVICES = {"minio-init", "airflow-init"}
AIRFLOW_MOUNTS = {
    "dags": "/opt/airflow/dags",
    "plugins": "/opt/airflow/plugins",
    "expectations": "/opt/airflow/expectations",
}
SETTINGS_NAMES = {f"MLCORE_{name.upper()}" for name in Settings.model_fields}

# Environment names whose values are credentials: they may only be ${VAR} references.
SECRET_ENV_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|KEY|TOKEN|CREDENTIAL", re.IGNORECASE)
# .env names whose development values must never be pasted into the compose file.
SECRET_DOTENV_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|JWT", re.IGNORECASE)
# ${VAR} or ${VAR:?message}: a reference with no literal fallback value.
PURE_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*)?\}$")
# user:password@ in a URL (postgresql://, redis://, http:// ...).
URL_CREDENTIALS = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^\s/@:]*):([^\s/@]*)@")
# Compose interpolation: "$$" is an escaped "$"; ${NAME...} and $NAME are substituted.
INTERPOLATION = re.compile(r"\$(?:\$|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
MLCORE_NAME = re.compile(r"\bMLCORE_[A-Z0-9_]*[A-Z0-9]\b")


# --- helpers (each is also tested below, so the checks are known to be able to fail) -------


def interpolated_names(text: str) -> set[str]:
    """The variable names Compose substitutes in ``text`` (``$$`` escapes excluded)."""
    names = set()
    for match in INTERPOLATION.finditer(text):
        braced, bare = match.groups()
        if braced is not None:
            name = re.match(r"[A-Za-z_][A-Za-z0-9_]*", braced)
            assert name, f"malformed interpolation ${{{braced}}}"
            names.add(name.group())
        elif bare is not None:
            names.add(bare)
    return names


def image_pin_problem(ref: str) -> str | None:
    """Why an image reference is not pinned, or None when it has a real tag or digest."""
    if "${" in ref:
        return f"{ref}: unresolved variable"
    name, _, digest = ref.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return None if digest else f"{ref}: no tag"
    tag = last.split(":", 1)[1]
    if not tag or tag == "latest":
        return f"{ref}: tag {tag!r} is not a pin"
    return None


def secret_problems(environment: dict[str, str]) -> list[str]:
    """Environment entries that carry a literal credential instead of a ${VAR} reference."""
    problems = []
    for name, value in environment.items():
        value = "" if value is None else str(value)
        is_path = name.endswith(("_FILE", "_PATH", "_DIR"))  # where a secret is, not the secret
        if SECRET_ENV_NAME.search(name) and not is_path and not PURE_REFERENCE.match(value):
            problems.append(f"{name}={value!r} is not a ${{VAR}} reference")
        for _user, password in URL_CREDENTIALS.findall(value):
            if not PURE_REFERENCE.match(password):
                problems.append(f"{name}: URL password {password!r} is not a ${{VAR}} reference")
    return problems


def environment_dict(environment) -> dict[str, str]:
    """A service's ``environment`` as a dict, from either the mapping or the list form."""
    if environment is None:
        return {}
    if isinstance(environment, dict):
        return {str(k): "" if v is None else str(v) for k, v in environment.items()}
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)


def parse_dotenv(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f".env line without '=': {line!r}"
        values[name.strip()] = value.strip().strip("'\"")
    return values


def strings(node):
    """Every string (keys and values) in a parsed YAML tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node


def volume_mounts(volumes) -> dict[str, str]:
    """target -> source for a service's volumes (short and long syntax)."""
    mounts = {}
    for volume in volumes or []:
        if isinstance(volume, dict):
            source, target = str(volume.get("source", "")), str(volume["target"])
        else:
            parts = str(volume).split(":")
            source, target = (parts[0], parts[1]) if len(parts) > 1 else ("", parts[0])
        mounts[target.rstrip("/")] = source.removeprefix("./").rstrip("/")
    return mounts


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


@cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@cache
def dotenv() -> dict[str, str]:
    return parse_dotenv(DOTENV.read_text())


def services() -> dict[str, dict]:
    return compose()["services"]


def resolve(text: str) -> str:
    """``text`` with ${VAR} filled from .env, as Compose does."""

    def sub(match: re.Match) -> str:
        braced, bare = match.groups()
        if braced is None and bare is None:
            return "$"
        name = re.match(r"[A-Za-z_][A-Za-z0-9_]*", braced or bare).group()
        return dotenv().get(name, match.group())

    return INTERPOLATION.sub(sub, text)


ALL_SERVICES = sorted(services())
AIRFLOW_SERVICES = sorted(name for name in ALL_SERVICES if name.startswith("airflow-"))
LONG_RUNNING = sorted(set(ALL_SERVICES) - ONE_SHOT_SERVICES)


# --- the helpers themselves -------------------------------------------------------------------


def test_helpers_catch_what_they_are_meant_to():
    assert interpolated_names("a $${HOST} ${B} ${C:-x} ${D:?set it} $E $$F") == {"B", "C", "D", "E"}
    assert image_pin_problem("redis") and image_pin_problem("redis:latest")
    assert image_pin_problem("localhost:5000/team/img")
    assert image_pin_problem("redis:7.2.11") is None
    assert image_pin_problem("localhost:5000/team/img:1.0") is None
    assert image_pin_problem("redis@sha256:" + "0" * 64) is None
    assert secret_problems({"POSTGRES_PASSWORD": "hunter2"})
    assert secret_problems({"AWS_SECRET_ACCESS_KEY": "${KEY:-fallback}"})
    assert secret_problems({"DB_URL": "postgresql://u:hunter2@db/x"})
    assert not secret_problems({"X_PASSWORDS_FILE": "/opt/airflow/auth/passwords.json"})
    assert not secret_problems({"POSTGRES_PASSWORD": "${POSTGRES_PASSWORD}",
                                "DB_URL": "postgresql://${U}:${P}@db/x", "HOST": "redis"})
    assert volume_mounts(["./dags:/opt/airflow/dags:ro"]) == {"/opt/airflow/dags": "dags"}
    assert environment_dict(["A=1", "B"]) == {"A": "1", "B": ""}


# --- services ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REQUIRED_SERVICES)
def test_required_service_is_defined(name):
    assert name in services(), f"docker-compose.yaml has no service {name!r}"


@pytest.mark.parametrize("name", ALL_SERVICES)
def test_image_is_pinned(name):
    service = services()[name]
    assert "image" in service, f"{name}: no image (a built image needs a pinned name too)"
    problem = image_pin_problem(resolve(str(service["image"])))
    assert problem is None, f"{name}: {problem}"


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_service_has_a_healthcheck(name):
    check = services()[name].get("healthcheck") or {}
    test = check.get("test")
    assert test and not check.get("disable"), f"{name}: no healthcheck"
    assert test not in (["NONE"], "NONE"), f"{name}: healthcheck disabled"


@pytest.mark.parametrize("name", sorted(ONE_SHOT_SERVICES))
def test_one_shot_service_is_not_restarted(name):
    assert services()[name].get("restart", "no") in ("no", "on-failure")


@pytest.mark.parametrize("name", ALL_SERVICES)
def test_dependencies_exist_and_wait_for_the_right_state(name):
    depends_on = services()[name].get("depends_on") or {}
    if isinstance(depends_on, list):
        depends_on = {dep: {} for dep in depends_on}
    for dep, spec in depends_on.items():
        assert dep in services(), f"{name} depends on unknown service {dep!r}"
        condition = (spec or {}).get("condition")
        if dep in ONE_SHOT_SERVICES:
            assert condition == "service_completed_successfully", f"{name} -> {dep}: {condition}"
        else:
            assert condition == "service_healthy", f"{name} -> {dep}: {condition}"
            assert services()[dep].get("healthcheck"), f"{name} waits on {dep}, which has none"


# --- Airflow services -----------------------------------------------------------------------


def test_airflow_services_are_found():
    assert {s for s in REQUIRED_SERVICES if s.startswith("airflow-")} <= set(AIRFLOW_SERVICES)


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_service_mounts_dags_plugins_and_expectations(name):
    mounts = volume_mounts(services()[name].get("volumes"))
    for source, target in AIRFLOW_MOUNTS.items():
        assert mounts.get(target) == source, f"{name}: ./{source} is not mounted at {target}"


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_service_runs_celery_on_postgres_and_the_s3_lake(name):
    env = environment_dict(services()[name].get("environment"))
    assert env.get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor"
    assert env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "").startswith("postgresql")
    assert env.get("AIRFLOW__CELERY__BROKER_URL", "").startswith("redis://")
    assert env.get("AIRFLOW__CELERY__RESULT_BACKEND", "").startswith("db+postgresql")
    assert env.get("MLCORE_LAKE_URI", "").startswith("s3://")
    assert env.get("MLCORE_S3_ENDPOINT_URL") == "http://minio:9000"
    assert env.get("MLCORE_MLFLOW_TRACKING_URI") == "http://mlflow:5000"
    # The keys come from the Airflow Connection airflow-init creates, not from settings.
    assert env.get("MLCORE_S3_CONN_ID") == "aws_default"
    assert '"aws_default": {' in services()["airflow-init"]["command"][-1]
    assert "MLCORE_S3_SECRET_ACCESS_KEY" not in env
    suites = env.get("MLCORE_GX_SUITES_DIR", "")
    assert suites == AIRFLOW_MOUNTS["expectations"] + "/suites"
    assert (REPO_ROOT / "expectations" / "suites").is_dir()


# --- settings names ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_SERVICES)
def test_environment_mlcore_names_are_settings(name):
    env = environment_dict(services()[name].get("environment"))
    unknown = {key for key in env if key.startswith("MLCORE_")} - SETTINGS_NAMES
    assert not unknown, f"{name}: not fields of mlcore.settings.Settings: {sorted(unknown)}"


@pytest.mark.parametrize("path", [COMPOSE, DOCKERFILE, DEPLOYMENT_DOC], ids=lambda p: p.name)
def test_every_mlcore_name_mentioned_is_a_setting(path):
    unknown = set(MLCORE_NAME.findall(path.read_text())) - SETTINGS_NAMES
    assert not unknown, f"{path.name}: not fields of mlcore.settings.Settings: {sorted(unknown)}"


# --- secrets and .env --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_SERVICES)
def test_no_literal_secret_in_environment(name):
    env = environment_dict(services()[name].get("environment"))
    assert not secret_problems(env), f"{name}: {secret_problems(env)}"


def test_no_literal_credentials_in_any_url():
    for text in strings(compose()):
        for _user, password in URL_CREDENTIALS.findall(text):
            assert PURE_REFERENCE.match(password), f"literal URL password in {text!r}"


def test_no_development_secret_value_is_pasted_into_compose():
    text = COMPOSE.read_text()
    for name, value in dotenv().items():
        if SECRET_DOTENV_NAME.search(name) and value:
            assert value not in text, f"the value of {name} from .env is written in the compose file"


def test_every_interpolated_variable_has_a_default_in_dotenv():
    used = set().union(*(interpolated_names(text) for text in strings(compose())))
    assert used, "the compose file interpolates nothing: secrets cannot come from .env"
    missing = used - dotenv().keys()
    assert not missing, f"${{VAR}} without a default in .env: {sorted(missing)}"


def test_dotenv_says_it_is_for_development_only():
    head = "\n".join(DOTENV.read_text().splitlines()[:5]).lower()
    assert head.startswith("#") and "development" in head


def test_dotenv_sets_no_mlcore_setting():
    # Tools (IDEs, direnv) load .env into shells: it must not repoint local runs and tests.
    assert not [name for name in dotenv() if name.startswith("MLCORE_")]


# --- Dockerfile ------------------------------------------------------------------------------


@cache
def instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text())


def test_dockerfile_final_stage_is_the_airflow_image_of_requirements():
    froms = [args for op, args in instructions() if op == "FROM"]
    assert froms, "the Dockerfile has no FROM"
    image = froms[-1].split()[0]  # the final stage is the image that runs
    assert image.startswith("apache/airflow:3.3.2"), image
    pin = re.search(r"^apache-airflow==(\S+)", (REPO_ROOT / "requirements.txt").read_text(), re.M)
    assert pin, "requirements.txt does not pin apache-airflow"
    tag = image.split(":", 1)[1]
    assert tag == pin.group(1) or tag.startswith(pin.group(1) + "-"), (tag, pin.group(1))
    assert tag.endswith("-python3.11"), "the image's Python must be the project's (3.11)"


def test_dockerfile_installs_requirements_with_constraints():
    copies = " ".join(args for op, args in instructions() if op == "COPY")
    assert "requirements.txt" in copies and "constraints.txt" in copies
    runs = [args for op, args in instructions() if op == "RUN" and "pip install" in args]
    assert any(re.search(r"-r \S*requirements\.txt", run) and re.search(r"-c \S*constraints\.txt", run)
               for run in runs), runs


def test_dockerfile_installs_the_package_and_the_airflow_config():
    copies = [args for op, args in instructions() if op == "COPY"]
    assert any("mlcore/" in args for args in copies)
    assert any(args.split()[-1] == "/opt/airflow/airflow.cfg" and "airflow.cfg" in args.split()[-2]
               for args in copies)
    runs = [args for op, args in instructions() if op == "RUN" and "pip install" in args]
    assert any("requirements.txt" not in run for run in runs), "mlcore itself is not installed"


def test_dockerfile_bakes_in_the_pinned_data_docs_assets():
    """The plugin serves Data Docs' CSS and scripts from node_modules: the image must hold
    them, installed by `npm ci` from the committed lock, or the pages render unstyled."""
    stages = [args.split() for op, args in instructions() if op == "FROM"]
    assert any(len(s) == 3 and s[1].upper() == "AS" and s[0].startswith("node:") for s in stages)
    runs = [args for op, args in instructions() if op == "RUN"]
    assert any("npm ci" in run for run in runs)
    copies = [args for op, args in instructions() if op == "COPY"]
    assert any("package-lock.json" in args for args in copies)
    assert any(args.startswith("--from=") and
               args.split()[-1] == "/opt/airflow/plugins/mlcore_ui_assets/node_modules"
               for args in copies)


# --- docs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_SERVICES)
def test_deployment_doc_names_every_service(name):
    assert f"`{name}`" in DEPLOYMENT_DOC.read_text(), f"docs/deployment.md does not describe {name}"


# --- MLflow behind a login ------------------------------------------------------------------


def test_mlflow_runs_the_basic_auth_app_with_credentials_from_the_environment():
    mlflow = services()["mlflow"]
    assert "--app-name basic-auth" in mlflow["command"][-1]
    env = environment_dict(mlflow.get("environment"))
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD",
                 "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert PURE_REFERENCE.match(env.get(name, "")), f"mlflow: {name} is not a ${{VAR}}"
    # The user store holds the DB password: its config is written at start, not baked in.
    assert 'ini = Path(os.environ["MLFLOW_AUTH_CONFIG_PATH"])' in mlflow["command"][-1]
    assert env["MLFLOW_AUTH_CONFIG_PATH"].startswith("/tmp/")
    assert "/tmp" not in volume_mounts(mlflow.get("volumes"))
    # MLflow refuses an admin password shorter than 12 characters at its first start.
    assert len(dotenv()[env["MLFLOW_AUTH_ADMIN_PASSWORD"].strip("${}")]) >= 12


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_signs_in_to_mlflow_as_the_account_mlflow_creates(name):
    server = environment_dict(services()["mlflow"].get("environment"))
    env = environment_dict(services()[name].get("environment"))
    assert env.get("MLFLOW_TRACKING_USERNAME") == server["MLFLOW_AUTH_ADMIN_USERNAME"]
    assert env.get("MLFLOW_TRACKING_PASSWORD") == server["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert env.get("MLCORE_MLFLOW_UI_URL") == "http://localhost:5000"


def test_mlflow_healthcheck_needs_no_login_and_the_image_has_the_auth_app():
    # /health is the one route the basic-auth app leaves open.
    assert "http://localhost:5000/health" in services()["mlflow"]["healthcheck"]["test"]
    requirements = (REPO_ROOT / "requirements.txt").read_text()
    assert re.search(r"^Flask-WTF==\S+", requirements, re.M), "MLflow basic-auth needs Flask-WTF"
