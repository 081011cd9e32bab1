"""Airflow connections turned into what hubflow's plain modules take (URLs, tokens, environments).

Called inside tasks only, never at DAG import: a connection lookup is I/O.
"""
from __future__ import annotations

from airflow.sdk import Connection


def ledger_url(conn_id: str) -> str:
    """SQLAlchemy URL of the ledger: the connection's extra `url`, else its URI (postgres:// -> postgresql://)."""
    conn = Connection.get(conn_id)
    url = conn.extra_dejson.get("url") or conn.get_uri()
    return "postgresql://" + url.removeprefix("postgres://") if url.startswith("postgres://") else url


def github_token(conn_id: str) -> str | None:
    """The token of the GitHub connection (its password), for git over HTTPS; None when it has none."""
    return Connection.get(conn_id).password or None
