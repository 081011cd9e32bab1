"""Airflow connections and variables turned into hubflow's clients: the one place that reads them.

Called inside tasks (and by the CLI) only, never at DAG import: a connection lookup is I/O. The DAG files import
this module at parse, so each client is imported inside the function that builds it.
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING
from urllib.parse import quote

from airflow.sdk import Connection

from hubflow.core.config import Settings

if TYPE_CHECKING:
    from hubflow.clients.github import GitHub
    from hubflow.clients.ledger import Ledger
    from hubflow.clients.registry import RegistryClient

log = logging.getLogger("hubflow")
SMOKE_TOKEN_ENV = "HUBFLOW_SMOKE_TOKEN"


def ledger_url(conn_id: str) -> str:
    """SQLAlchemy URL of the ledger: the connection's extra `url`, else its URI (postgres:// -> postgresql://)."""
    conn = Connection.get(conn_id)
    url = conn.extra_dejson.get("url") or conn.get_uri()
    return "postgresql://" + url.removeprefix("postgres://") if url.startswith("postgres://") else url


def ledger(settings: Settings) -> Ledger:
    from hubflow.clients.ledger import Ledger

    return Ledger(ledger_url(settings.ledger.conn_id))


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
    """The registry client from connection `registry.conn_id`: host (with port, optionally scheme), login, password."""
    from hubflow.clients.registry import Credentials, RegistryClient, RegistryError

    conn_id = settings.registry.conn_id
    conn = Connection.get(conn_id)
    if not conn.host:
        raise RegistryError(f"connection {conn_id!r} has no host: set it to the registry, e.g. ghcr.io")
    host = conn.host if conn.port is None or "://" in conn.host else f"{conn.host}:{conn.port}"
    if conn.schema in ("http", "https") and "://" not in host:
        host = f"{conn.schema}://{host}"
    return RegistryClient(Credentials(host=host, login=conn.login, password=conn.password))


def smoke_token(conn_id: str) -> str:
    """The password of Airflow connection `conn_id`, else $HUBFLOW_SMOKE_TOKEN; never an argument, never logged."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    from hubflow.clients.jupyterhub import SmokeError

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
