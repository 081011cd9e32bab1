"""hubflow's connection types as Airflow discovers them: the provider info of the `apache_airflow_provider` entry
point, and the one description of each connection form (hubflow.airflow.hooks returns the same dicts).

Airflow 3.3 lists connection types only from provider info (ProvidersManager reads `connection-types` from the
entry points of installed distributions; an AirflowPlugin cannot add one), and the UI draws the form from this
data without importing the hook. Pure data: importing it loads nothing, so every Airflow process may call it.
Without the entry point (hubflow only on PYTHONPATH, as in the compose image) the hooks work the same on any
connection type; the UI then offers no hubflow form.
"""
from __future__ import annotations

from typing import Any

LEDGER_HOOK = "hubflow.airflow.hooks.LedgerHook"
REGISTRY_HOOK = "hubflow.airflow.hooks.RegistryHook"

# the form of a `hubflow_ledger` connection: PostgreSQL from the fields, or any SQLAlchemy URL in the extra `url`
LEDGER_FORM: dict[str, Any] = {
    "hidden_fields": ["extra"],
    "relabeling": {"host": "PostgreSQL host", "schema": "Database", "login": "User"},
    "placeholders": {
        "host": "postgres.example.org",
        "port": "5432",
        "schema": "hubflow",
        "login": "hubflow",
        "password": "the user's password",
        "url": "postgresql+psycopg2://hubflow:PASSWORD@postgres.example.org:5432/hubflow",
    },
}
LEDGER_FIELDS: dict[str, Any] = {
    "url": {
        "label": "SQLAlchemy URL",
        "schema": {"type": ["string", "null"]},
        "description": "Optional. The whole database URL instead of the fields above (which it overrides), e.g. "
                       "postgresql+psycopg2://user:password@host:5432/hubflow or sqlite:////var/lib/hubflow/ledger.db."
                       " Not Airflow's metadata database: the ledger must outlive it.",
    },
}

# the form of a `hubflow_registry` connection: what RegistryClient's Credentials take
REGISTRY_FORM: dict[str, Any] = {
    "hidden_fields": ["extra"],
    "relabeling": {"host": "Registry", "schema": "Scheme", "login": "Username", "password": "Password or token"},
    "placeholders": {
        "host": "ghcr.io (Docker Hub: docker.io; a local registry: 127.0.0.1)",
        "port": "only for a registry on another port, e.g. 5000",
        "schema": "https (default), or http for a registry without TLS",
        "login": "empty for anonymous pulls",
        "password": "a token that may pull (read) the images",
    },
}


def _kebab(form: dict[str, Any]) -> dict[str, Any]:
    return {key.replace("_", "-"): value for key, value in form.items()}


def get_provider_info() -> dict[str, Any]:
    """What the `apache_airflow_provider` entry point returns (Airflow's provider_info.schema.json)."""
    return {
        "package-name": "hubflow",
        "name": "hubflow",
        "description": "Deploys, verifies, promotes and reverts JupyterHub fleets kept in git: the connection "
                       "types of its ledger and image registry.",
        "connection-types": [
            {"connection-type": "hubflow_ledger", "hook-class-name": LEDGER_HOOK, "hook-name": "hubflow ledger",
             "ui-field-behaviour": _kebab(LEDGER_FORM), "conn-fields": LEDGER_FIELDS},
            {"connection-type": "hubflow_registry", "hook-class-name": REGISTRY_HOOK,
             "hook-name": "hubflow image registry", "ui-field-behaviour": _kebab(REGISTRY_FORM)},
        ],
    }
