"""The ledger and registry hooks: one client per process and per URL or credentials, made once however often the
tasks ask, never used across a fork (a real os.fork() against the machine's PostgreSQL); their connection forms as
Airflow 3.3's ProvidersManager and the UI's connection-form service read them from hubflow's provider info."""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import traceback

import pytest
import sqlalchemy as sa

from hubflow.airflow import hooks
from hubflow.airflow.provider_info import get_provider_info
from hubflow.clients.ledger import Ledger
from hubflow.core.errors import HubflowError
from hubflow.core.settings import load_settings


@pytest.fixture(autouse=True)
def fresh_caches():
    """Each test starts, and leaves, with no client cached in this process."""
    hooks._LEDGERS.close()
    hooks._REGISTRIES.close()
    yield
    hooks._LEDGERS.close()
    hooks._REGISTRIES.close()


def use_ledger(monkeypatch, url: str) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_HUBFLOW_LEDGER", json.dumps({"conn_type": "generic", "extra": {"url": url}}))


@pytest.fixture
def engines_made(monkeypatch):
    """(pid, url) of every SQLAlchemy engine made from now on, in this process and in its forks."""
    made = []
    real = sa.create_engine

    def counting(url, *args, **kwargs):
        made.append((os.getpid(), str(url)))
        return real(url, *args, **kwargs)
    monkeypatch.setattr(sa, "create_engine", counting)
    return made


@pytest.fixture
def migrations(monkeypatch):
    """How many times a Ledger checked its schema (its migration step) from now on."""
    calls = []
    real = Ledger._migrate

    def counting(self):
        calls.append(os.getpid())
        return real(self)
    monkeypatch.setattr(Ledger, "_migrate", counting)
    return calls


# --- one client per process ------------------------------------------------------------------------------------------

def test_many_ledger_calls_make_one_engine_and_one_migration_check(tmp_path, monkeypatch, engines_made, migrations):
    url = f"sqlite:///{tmp_path}/ledger.db"
    use_ledger(monkeypatch, url)
    settings = load_settings()
    books = [hooks.ledger(settings) for _ in range(25)]  # a deploy run asks about this often, tasks twice
    assert all(book is books[0] for book in books)
    assert engines_made == [(os.getpid(), url)] and migrations == [os.getpid()]
    a = books[0].start("staging", "a" * 40, None, None, "r1")
    assert hooks.ledger(settings).get(a).run_id == "r1"
    assert len(engines_made) == 1


def test_a_changed_connection_gets_its_own_ledger_and_the_old_one_is_kept(tmp_path, monkeypatch, engines_made):
    settings = load_settings()
    use_ledger(monkeypatch, f"sqlite:///{tmp_path}/one.db")
    one = hooks.ledger(settings)
    use_ledger(monkeypatch, f"sqlite:///{tmp_path}/two.db")
    two = hooks.ledger(settings)
    use_ledger(monkeypatch, f"sqlite:///{tmp_path}/one.db")
    assert two is not one and hooks.ledger(settings) is one and len(engines_made) == 2


def test_a_ledger_that_cannot_open_is_not_kept(tmp_path, monkeypatch, engines_made):
    from hubflow.clients.ledger import LedgerError

    def unreachable(self):
        raise LedgerError("ledger migrate failed after 5 tries: connection refused")
    use_ledger(monkeypatch, f"sqlite:///{tmp_path}/l.db")
    monkeypatch.setattr(Ledger, "_migrate", unreachable)
    for _ in range(2):
        with pytest.raises(LedgerError, match="ledger migrate failed"):
            hooks.ledger(load_settings())
    assert len(engines_made) == 2  # tried again, not a broken client served from the cache


def test_the_oldest_client_beyond_the_bound_is_closed():
    closed = []
    cache = hooks.ProcessCache(close=closed.append, release=lambda item: None, size=2)
    for key in ("a", "b", "a", "c"):  # "a" used again: "b" is the oldest
        cache.get(key, lambda key=key: key.upper())
    assert closed == ["B"] and cache.get("a", lambda: "new") == "A"
    cache.close()
    assert sorted(closed) == ["A", "B", "C"]


def test_closing_a_ledger_closes_its_pool_and_leaves_it_usable(tmp_path):
    with Ledger(f"sqlite:///{tmp_path}/l.db") as book:
        a = book.start("staging", "a" * 40, None, None, "r1")
        assert book.engine.pool.checkedin() == 1
        book.close()
        assert book.engine.pool.checkedin() == 0
        assert book.get(a).run_id == "r1"
    assert book.engine.pool.checkedin() == 0


def test_one_registry_client_per_process_and_credentials(monkeypatch):
    def connect(password):
        monkeypatch.setenv("AIRFLOW_CONN_HUBFLOW_REGISTRY", json.dumps(
            {"conn_type": "hubflow_registry", "host": "127.0.0.1", "port": 5000, "login": "pusher",
             "password": password}))
        return hooks.registry(load_settings())
    first = connect("s3cret-pw")
    assert connect("s3cret-pw") is first and first.credentials.host == "127.0.0.1:5000"
    rotated = connect("n3w-pw")  # a rotated password is another client, with no stale token
    assert rotated is not first and rotated.credentials.password == "n3w-pw"


# --- forks -----------------------------------------------------------------------------------------------------------

def in_a_fork(body) -> dict:
    """Run `body()` in a real os.fork() child; its JSON answer (or its traceback) comes back through a pipe."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            answer = json.dumps(body())
        except BaseException:  # noqa: BLE001 - reported to the parent
            answer, code = json.dumps({"error": traceback.format_exc()}), 1
        with os.fdopen(write, "w") as out:
            out.write(answer)
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as answer:
        text = answer.read()
    _, status = os.waitpid(pid, 0)
    result = json.loads(text)
    assert os.waitstatus_to_exitcode(status) == 0, result.get("error")
    return result


def backend(book: Ledger) -> int:
    with book.engine.connect() as c:
        return c.execute(sa.text("SELECT pg_backend_pid()")).scalar()


def test_a_forked_child_makes_its_own_engine_and_leaves_the_parents_connections_alone(
        pg_database, monkeypatch, engines_made, migrations):
    use_ledger(monkeypatch, pg_database)
    settings = load_settings()
    book = hooks.ledger(settings)
    parent_pool, parent_backend = book.engine.pool, backend(book)
    assert parent_pool.checkedin() == 1  # a live pooled connection the child inherits

    def child():
        inherited_pool = book.engine.pool  # the fork hook let the parent's pool go (dispose(close=False))
        cached = dict(hooks._LEDGERS._items)
        gc.collect()  # whatever the child dropped is collected now, before the parent looks at its connection
        mine = hooks.ledger(settings)
        attempt = mine.start("staging", "c" * 40, None, None, "child-run")
        return {"cache_empty_after_fork": cached == {}, "inherited_pool_replaced": inherited_pool is not parent_pool,
                "same_ledger": mine is book, "same_engine": mine.engine is book.engine,
                "again_same": hooks.ledger(settings) is mine, "backend": backend(mine), "attempt": attempt,
                "engines_made_here": [url for pid, url in engines_made if pid == os.getpid()],
                "migration_checks_here": migrations.count(os.getpid())}

    seen = in_a_fork(child)
    assert seen["cache_empty_after_fork"] and seen["inherited_pool_replaced"]
    assert not seen["same_ledger"] and not seen["same_engine"] and seen["again_same"]
    assert seen["engines_made_here"] == [pg_database] and seen["migration_checks_here"] == 1
    assert seen["backend"] != parent_backend
    # the parent: the same Ledger, the same pool, the same PostgreSQL session, alive and unused by the child
    assert hooks.ledger(settings) is book and book.engine.pool is parent_pool and parent_pool.checkedin() == 1
    assert backend(book) == parent_backend
    assert book.get(seen["attempt"]).run_id == "child-run"
    assert [pid for pid, _ in engines_made].count(os.getpid()) == 1 and migrations.count(os.getpid()) == 1


def test_the_check_would_see_a_child_that_closed_the_parents_connection(pg_database, monkeypatch):
    """The control for the test above: a child that closes the pool it inherited (what `engine.dispose()`
    without close=False would do, had the fork hook not let that pool go) ends the parent's PostgreSQL session,
    and the parent ends up on another one."""
    use_ledger(monkeypatch, pg_database)
    book = hooks.ledger(load_settings())
    parent_pool, parent_backend = book.engine.pool, backend(book)

    def careless_child():
        parent_pool.dispose()  # closes the pooled connection the parent still holds
        return {}
    in_a_fork(careless_child)
    assert backend(book) != parent_backend  # pool_pre_ping found the connection dead and opened another


def test_a_forked_child_makes_its_own_registry_client(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_HUBFLOW_REGISTRY", json.dumps(
        {"conn_type": "hubflow_registry", "host": "ghcr.io", "login": "bot", "password": "tok"}))
    client = hooks.registry(load_settings())

    def child():
        mine = hooks.registry(load_settings())
        return {"same": mine is client, "same_session": mine.session is client.session,
                "again_same": hooks.registry(load_settings()) is mine}
    assert in_a_fork(child) == {"same": False, "same_session": False, "again_same": True}
    assert hooks.registry(load_settings()) is client


# --- connections ----------------------------------------------------------------------------------------------------

def test_ledger_urls_from_each_kind_of_connection(monkeypatch):
    def url(conn):
        monkeypatch.setenv("AIRFLOW_CONN_HUBFLOW_LEDGER", json.dumps(conn))
        return hooks.ledger_url("hubflow_ledger")
    assert url({"conn_type": "generic", "extra": {"url": "sqlite:////var/l.db"}}) == "sqlite:////var/l.db"
    assert url({"conn_type": "postgres", "host": "db", "port": 5432, "schema": "hub", "login": "u",
                "password": "p"}) == "postgresql://u:p@db:5432/hub"
    assert url({"conn_type": "hubflow_ledger", "host": "db.example.org", "port": 5433, "schema": "hubflow",
                "login": "hubflow", "password": "p@ss/w:rd"}) == \
        "postgresql://hubflow:p%40ss%2Fw%3Ard@db.example.org:5433/hubflow"
    assert url({"conn_type": "hubflow_ledger", "host": "db", "extra": {"url": "sqlite:////x.db"}}) == "sqlite:////x.db"
    with pytest.raises(HubflowError, match="'hubflow_ledger' has neither an SQLAlchemy URL nor a host"):
        url({"conn_type": "hubflow_ledger", "login": "x"})


LEDGER_FORM = {
    "hidden_fields": ["extra"],
    "relabeling": {"host": "PostgreSQL host", "schema": "Database", "login": "User"},
    "placeholders": {"host": "postgres.example.org", "port": "5432", "schema": "hubflow", "login": "hubflow",
                     "password": "the user's password",
                     "url": "postgresql+psycopg2://hubflow:PASSWORD@postgres.example.org:5432/hubflow"},
}
REGISTRY_FORM = {
    "hidden_fields": ["extra"],
    "relabeling": {"host": "Registry", "schema": "Scheme", "login": "Username", "password": "Password or token"},
    "placeholders": {"host": "ghcr.io (Docker Hub: docker.io; a local registry: 127.0.0.1)",
                     "port": "only for a registry on another port, e.g. 5000",
                     "schema": "https (default), or http for a registry without TLS",
                     "login": "empty for anonymous pulls", "password": "a token that may pull (read) the images"},
}


def test_the_hooks_describe_their_connection_forms():
    assert (hooks.LedgerHook.conn_type, hooks.LedgerHook.conn_name_attr, hooks.LedgerHook.default_conn_name,
            hooks.LedgerHook.hook_name) == ("hubflow_ledger", "ledger_conn_id", "hubflow_ledger", "hubflow ledger")
    assert (hooks.RegistryHook.conn_type, hooks.RegistryHook.conn_name_attr, hooks.RegistryHook.default_conn_name,
            hooks.RegistryHook.hook_name) == ("hubflow_registry", "registry_conn_id", "hubflow_registry",
                                              "hubflow image registry")
    assert hooks.LedgerHook.get_ui_field_behaviour() == LEDGER_FORM
    assert hooks.RegistryHook.get_ui_field_behaviour() == REGISTRY_FORM
    hooks.LedgerHook.get_ui_field_behaviour()["hidden_fields"].append("host")  # a copy: the next form is intact
    assert hooks.LedgerHook.get_ui_field_behaviour() == LEDGER_FORM
    assert hooks.LedgerHook().ledger_conn_id == "hubflow_ledger"
    assert hooks.RegistryHook("mine").registry_conn_id == "mine"


def test_the_provider_info_passes_airflows_schemas():
    from airflow.providers_manager import (
        _create_customized_form_field_behaviours_schema_validator,
        _create_provider_info_schema_validator,
    )

    info = get_provider_info()
    _create_provider_info_schema_validator().validate(info)
    forms = _create_customized_form_field_behaviours_schema_validator()
    for hook in (hooks.LedgerHook, hooks.RegistryHook):
        forms.validate(hook.get_ui_field_behaviour())
    assert {c["connection-type"]: c["hook-class-name"] for c in info["connection-types"]} == {
        "hubflow_ledger": "hubflow.airflow.hooks.LedgerHook", "hubflow_registry": "hubflow.airflow.hooks.RegistryHook"}


DISCOVERY = textwrap.dedent("""
    import json
    from importlib import metadata
    from airflow._shared import module_loading
    from airflow.sdk._shared import module_loading as sdk_module_loading

    # the entry point as pyproject.toml would declare it, on the installed hubflow distribution
    point = metadata.EntryPoint("provider_info", "hubflow.airflow.provider_info:get_provider_info",
                                "apache_airflow_provider")
    for loading in (module_loading, sdk_module_loading):
        loading._get_grouped_entry_points()["apache_airflow_provider"].append((point, metadata.distribution("hubflow")))

    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.definitions.connection import Connection
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    for manager in (ProvidersManager, ProvidersManagerTaskRuntime):  # listed at import (providers' config) already
        manager._instance, manager._initialized = None, False

    pm = ProvidersManager()
    meta = {m.connection_type: m.model_dump() for m in HookMetaService.hook_meta_data()
            if m.connection_type.startswith("hubflow")}
    info = {t: pm.hooks[t] for t in ("hubflow_ledger", "hubflow_registry")}
    hook = Connection(conn_id="hubflow_registry", conn_type="hubflow_registry", host="ghcr.io").get_hook()
    print(json.dumps({"providers": sorted(pm.providers), "ui": meta,
                      "hooks": {t: [i.hook_class_name, i.connection_id_attribute_name, i.hook_name]
                                for t, i in info.items()},
                      "field_behaviours": {t: pm.field_behaviours[t] for t in info},
                      "get_hook": [type(hook).__name__, hook.registry_conn_id]}))
""")


def test_airflow_discovers_the_connection_types_and_the_ui_gets_their_forms():
    """ProvidersManager, fed the `apache_airflow_provider` entry point (added here: pyproject.toml may not declare
    it, and a declared one is found once), lists both types with their hooks, and the UI's connection-form service
    (what the Airflow 3.3 UI draws the form from, without importing the hook) gets the labels, hidden fields,
    placeholders and the ledger's URL field."""
    out = subprocess.run([sys.executable, "-c", DISCOVERY], capture_output=True, text=True, timeout=180,
                         env=os.environ)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert "hubflow" in found["providers"]
    assert found["hooks"] == {
        "hubflow_ledger": ["hubflow.airflow.hooks.LedgerHook", "ledger_conn_id", "hubflow ledger"],
        "hubflow_registry": ["hubflow.airflow.hooks.RegistryHook", "registry_conn_id", "hubflow image registry"]}
    assert found["get_hook"] == ["RegistryHook", "hubflow_registry"]
    ledger_placeholders = {**LEDGER_FORM["placeholders"]}
    ledger_placeholders["extra__hubflow_ledger__url"] = ledger_placeholders.pop("url")  # Airflow prefixes extras
    assert found["field_behaviours"]["hubflow_ledger"] == {**LEDGER_FORM, "placeholders": ledger_placeholders}
    assert found["field_behaviours"]["hubflow_registry"] == REGISTRY_FORM

    ledger, registry = found["ui"]["hubflow_ledger"], found["ui"]["hubflow_registry"]
    assert ledger["hook_name"] == "hubflow ledger" and registry["hook_name"] == "hubflow image registry"
    fields = ledger["standard_fields"]
    assert fields["host"] == {"hidden": False, "title": "PostgreSQL host", "placeholder": "postgres.example.org"}
    assert fields["url_schema"] == {"hidden": False, "title": "Database", "placeholder": "hubflow"}
    assert fields["port"] == {"hidden": False, "title": None, "placeholder": "5432"}
    url = ledger["extra_fields"]["url"]
    assert url["schema"]["title"] == "SQLAlchemy URL" and url["schema"]["type"] == ["string", "null"]
    assert "sqlite:////" in url["description"]
    assert registry["standard_fields"]["password"] == {
        "hidden": False, "title": "Password or token", "placeholder": "a token that may pull (read) the images"}
    assert registry["standard_fields"]["url_schema"]["title"] == "Scheme"
