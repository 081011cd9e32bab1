"""Airflow connections and variables turned into hubflow's clients: the one place that reads them.

Called inside tasks (and by the CLI) only, never at DAG import: a connection lookup is I/O. The DAG files import
this module at parse, so each client is imported inside the function that builds it.

The ledger and the registry are Airflow hooks (`LedgerHook`, `RegistryHook`: connection types `hubflow_ledger`
and `hubflow_registry`, whose forms hubflow.airflow.provider_info describes). Each keeps ONE client per process
and per URL or credentials (`ProcessCache`): the ledger's engine and its migration check happen once per process,
however many tasks, retries and pages ask, and never cross a fork. `ledger(settings)` and `registry(settings)` are
what the tasks call.
"""
from __future__ import annotations

import atexit
import copy
import logging
import os
import threading
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Generic, Hashable, TypeVar
from urllib.parse import quote

from airflow.sdk import BaseHook, Connection

from hubflow.airflow.provider_info import LEDGER_FORM, REGISTRY_FORM
from hubflow.core.errors import HubflowError
from hubflow.core.settings import Settings

if TYPE_CHECKING:
    from hubflow.clients.github import GitHub
    from hubflow.clients.ledger import Ledger
    from hubflow.clients.registry import Credentials, RegistryClient

log = logging.getLogger("hubflow")
SMOKE_TOKEN_ENV = "HUBFLOW_SMOKE_TOKEN"

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
_CACHES: weakref.WeakSet[ProcessCache] = weakref.WeakSet()


class ProcessCache(Generic[K, V]):
    """Clients kept for the life of this process, one per key (a ledger URL, registry credentials): the `size`
    most recently used; an older one is closed.

    Fork-safe: Celery's prefork pool forks after import and Airflow's supervisor forks each task, so a child can
    inherit clients with open connections. The child starts empty and never uses one its parent made; it lets each
    go with `release` and does not close it (for an engine, SQLAlchemy's `dispose(close=False)`), so the
    connections the parent still uses stay whole.
    """

    def __init__(self, close: Callable[[V], None], release: Callable[[V], None], size: int = 8):
        self._close, self._release, self._size = close, release, size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()  # api-server threads: one client per key, made once
        self._pid = os.getpid()
        _CACHES.add(self)

    def get(self, key: K, make: Callable[[], V]) -> V:
        """The client for `key`, made by `make()` the first time in this process (a failure keeps nothing)."""
        if self._pid != os.getpid():  # a fork that bypassed os.fork (whose hook below already did this)
            self._forget_parent()
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            item = self._items[key] = make()
            while len(self._items) > self._size:
                self._close(self._items.popitem(last=False)[1])
            return item

    def close(self) -> None:
        """Close every client of this process (at exit)."""
        if self._pid != os.getpid():
            return
        with self._lock:
            items, self._items = list(self._items.values()), OrderedDict()
        for item in items:
            self._close(item)

    def _forget_parent(self) -> None:
        inherited, self._items = list(self._items.values()), OrderedDict()
        self._lock = threading.Lock()  # a parent's thread may have held it at the fork
        self._pid = os.getpid()
        for item in inherited:
            self._release(item)


def _after_fork_in_child() -> None:
    for cache in list(_CACHES):
        cache._forget_parent()


def _close_all() -> None:
    for cache in list(_CACHES):
        cache.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all)

_LEDGERS: ProcessCache[str, Ledger] = ProcessCache(
    close=lambda book: book.close(), release=lambda book: book.engine.dispose(close=False))
_REGISTRIES: ProcessCache[Credentials, RegistryClient] = ProcessCache(
    # a child drops its copy of the session: its sockets' descriptors close, the parent's connections stay open
    close=lambda client: client.close(), release=lambda client: None)


class LedgerHook(BaseHook):
    """The ledger database of an Airflow connection. `get_conn()` is this process's one `Ledger` for the
    connection's URL: one engine and one migration check per process, not one per call."""

    conn_name_attr = "ledger_conn_id"
    default_conn_name = "hubflow_ledger"
    conn_type = "hubflow_ledger"
    hook_name = "hubflow ledger"

    def __init__(self, ledger_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ledger_conn_id = ledger_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return copy.deepcopy(LEDGER_FORM)

    def get_url(self) -> str:
        """The SQLAlchemy URL: the extra `url`; else, on a `hubflow_ledger` connection, PostgreSQL at host, port,
        database (schema) as user (login, password); else the connection's URI (a `postgres` connection's
        postgres:// becomes postgresql://)."""
        conn = self.get_connection(self.ledger_conn_id)
        url = conn.extra_dejson.get("url")
        if not url and conn.conn_type == self.conn_type:
            if not conn.host:
                raise HubflowError(f"connection {self.ledger_conn_id!r} has neither an SQLAlchemy URL nor a host: "
                                   "set the PostgreSQL host (and database, user, password) or the URL")
            from sqlalchemy.engine import URL

            return URL.create("postgresql", username=conn.login or None, password=conn.password or None,
                              host=conn.host, port=conn.port, database=conn.schema or None,
                              ).render_as_string(hide_password=False)
        url = url or conn.get_uri()
        return "postgresql://" + url.removeprefix("postgres://") if url.startswith("postgres://") else url

    def get_conn(self) -> Ledger:
        from hubflow.clients.ledger import Ledger

        url = self.get_url()
        return _LEDGERS.get(url, lambda: Ledger(url))


class RegistryHook(BaseHook):
    """The image registry of an Airflow connection: host (with port, optionally a scheme), login, password.
    `get_conn()` is this process's one `RegistryClient` for those credentials (its connections and tokens kept)."""

    conn_name_attr = "registry_conn_id"
    default_conn_name = "hubflow_registry"
    conn_type = "hubflow_registry"
    hook_name = "hubflow image registry"

    def __init__(self, registry_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.registry_conn_id = registry_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return copy.deepcopy(REGISTRY_FORM)

    def get_credentials(self) -> Credentials:
        from hubflow.clients.registry import Credentials, RegistryError

        conn = self.get_connection(self.registry_conn_id)
        if not conn.host:
            raise RegistryError(f"connection {self.registry_conn_id!r} has no host: set it to the registry, "
                                "e.g. ghcr.io")
        host = conn.host if conn.port is None or "://" in conn.host else f"{conn.host}:{conn.port}"
        if conn.schema in ("http", "https") and "://" not in host:
            host = f"{conn.schema}://{host}"
        return Credentials(host=host, login=conn.login, password=conn.password)

    def get_conn(self) -> RegistryClient:
        from hubflow.clients.registry import RegistryClient

        credentials = self.get_credentials()
        return _REGISTRIES.get(credentials, lambda: RegistryClient(credentials))


def ledger_url(conn_id: str) -> str:
    """SQLAlchemy URL of the ledger in connection `conn_id` (see LedgerHook.get_url)."""
    return LedgerHook(conn_id).get_url()


def ledger(settings: Settings) -> Ledger:
    """This process's ledger for the settings' connection (one engine per process and URL)."""
    return LedgerHook(settings.ledger.conn_id).get_conn()


def github_token(conn_id: str) -> str | None:
    """The token of the GitHub connection (its password), for git over HTTPS; None when it has none."""
    return Connection.get(conn_id).password or None


def github_client(conn_id: str, timeout: int = 30):
    """A PyGithub client from the Airflow GitHub connection (token or GitHub App, host for GHE or the emulator).

    The provider's hook reads the connection and builds the auth; the client is rebuilt with hubflow's settings.
    """
    from airflow.providers.github.hooks.github import GithubHook

    from hubflow.clients.github import make_client

    requester = GithubHook(github_conn_id=conn_id).get_conn().requester
    return make_client(requester.auth, requester.base_url, timeout)


def github(settings: Settings, **kwargs) -> GitHub:
    from hubflow.clients.github import GitHub

    kwargs.setdefault("max_wait", settings.timeouts.github_wait_seconds)
    return GitHub(settings, github_client(settings.repository.github_conn_id), **kwargs)


def registry(settings: Settings) -> RegistryClient:
    """This process's registry client for connection `registry.conn_id` (see RegistryHook)."""
    return RegistryHook(settings.registry.conn_id).get_conn()


def smoke_token(conn_id: str) -> str:
    """The password of Airflow connection `conn_id`, else $HUBFLOW_SMOKE_TOKEN; never an argument, never logged."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    from hubflow.clients.smoke import SmokeError

    try:
        token = Connection.get(conn_id).password
    except AirflowNotFoundException:
        token = None
    token = token or os.environ.get(SMOKE_TOKEN_ENV)
    if not token:
        raise SmokeError(f"no smoke token: Airflow connection {conn_id!r} has no password and {SMOKE_TOKEN_ENV} "
                         "is not set")
    return token


def freeze_switch(env: str) -> str | None:
    """The reason an operator froze `env` by hand (`hubflow freeze`), or None."""
    from airflow.sdk import Variable

    from hubflow.core.freeze import variable_name

    return Variable.get(variable_name(env), default=None)


def set_freeze_switch(env: str, reason: str | None) -> None:
    """Freeze `env` by hand with `reason`, or lift the switch (None); for the CLI, which runs outside a task."""
    from airflow.models import Variable

    from hubflow.core.freeze import variable_name

    if reason is None:
        Variable.delete(variable_name(env))
    else:
        Variable.set(variable_name(env), reason)


def notify(settings: Settings, text: str) -> bool:
    """Post `text` to the configured Slack webhook. False when none is configured or Slack fails: a message that
    cannot be delivered never fails a run (the failure is logged)."""
    if not settings.notify.slack_conn_id:
        return False
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    quiet = logging.getLogger("hubflow.slack")  # slack_sdk logs each retry with the full URL, whose path is secret
    quiet.setLevel(logging.WARNING)
    try:
        SlackWebhookHook(slack_webhook_conn_id=settings.notify.slack_conn_id, logger=quiet).send_text(text)
    except Exception as exc:  # noqa: BLE001 - any failure of the optional channel is logged, never raised
        # only the kind of error: its text may carry the webhook URL, whose path is the secret
        log.warning("Slack notification through %r failed (%s)", settings.notify.slack_conn_id, type(exc).__name__)
        return False
    return True


def run_url(dag_id: str, run_id: str) -> str:
    """Link to a run in the Airflow UI (commit statuses and PR bodies point here)."""
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="") or "http://localhost:8080"
    return f"{base.rstrip('/')}/dags/{dag_id}/runs/{quote(run_id, safe='')}"


def kubernetes(conn_id: str):
    """A kubernetes ApiClient from the Airflow Kubernetes connection `conn_id` (kubeconfig, in-cluster, context),
    built by the provider's hook, as the pod operator reaches the same cluster."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    return KubernetesHook(conn_id=conn_id).api_client
