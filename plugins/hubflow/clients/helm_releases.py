"""Helm's own release records, read through the Kubernetes API: what a release really runs, with no helm binary.

Helm keeps one Secret per release revision (type helm.sh/release.v1, name sh.helm.release.v1.<release>.v<N>,
labels owner=helm, name, status, version); its `data.release` is base64(gzip(JSON)) inside the Secret's own base64.
The JSON holds the chart's metadata, `config` (the user-supplied values: with decrypted secrets, so a Record's config
is kept out of its repr and of `summary()`, and must never be logged or reach XCom), info (status, description,
last_deployed) and the revision number. hubflow's runner writes the description "hubflow <env> <sha>".

No Airflow here: `HelmReleases` takes a kubernetes ApiClient (hubflow.airflow.hooks.kubernetes builds one).
"""
from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import re
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from hubflow.core.errors import HubflowError

DESCRIPTION = re.compile(r"^hubflow (?P<env>\S+) (?P<revision>[0-9a-f]{7,40})\b")
ROLLED_BACK = re.compile(r"^Rollback to (\d+)")
GZIP_MAGIC = b"\x1f\x8b\x08"
_FRACTION = re.compile(r"(\.\d{6})\d+")


class ReleaseError(HubflowError):
    """The release records cannot be read (the API refused or cannot be reached, or a record is damaged)."""


@dataclass(frozen=True)
class Record:
    name: str
    namespace: str
    version: int
    status: str
    chart_version: str | None
    description: str
    updated: dt.datetime
    config: dict[str, Any] = field(repr=False, compare=False)

    def summary(self) -> dict[str, Any]:
        """The record without its values (they may hold secrets)."""
        return {"name": self.name, "namespace": self.namespace, "version": self.version, "status": self.status,
                "chart_version": self.chart_version, "description": self.description,
                "updated": self.updated.isoformat()}


def decode(data: str) -> dict[str, Any]:
    """The release JSON from a Secret's `data.release` as the API returns it (helm gzips, but reads plain JSON too)."""
    raw = base64.b64decode(base64.b64decode(data))
    return json.loads(gzip.decompress(raw) if raw.startswith(GZIP_MAGIC) else raw)


def _time(value: str | None) -> dt.datetime:
    """Go's RFC 3339 (nanoseconds, Z or an offset) as an aware datetime."""
    if not value:
        return dt.datetime.fromtimestamp(0, dt.timezone.utc)
    parsed = dt.datetime.fromisoformat(_FRACTION.sub(r"\1", value.replace("Z", "+00:00")))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def record_of(secret: k8s.V1Secret) -> Record:
    meta = secret.metadata
    try:
        release = decode((secret.data or {})["release"])
    except (KeyError, ValueError, OSError) as exc:
        raise ReleaseError(f"helm record {meta.namespace}/{meta.name} cannot be decoded: "
                           f"{type(exc).__name__}") from None
    info = release.get("info") or {}
    return Record(name=release.get("name") or meta.labels.get("name"), namespace=meta.namespace,
                  version=int(release.get("version") or meta.labels.get("version") or 0),
                  status=info.get("status") or meta.labels.get("status", "unknown"),
                  chart_version=((release.get("chart") or {}).get("metadata") or {}).get("version"),
                  description=info.get("description") or "", updated=_time(info.get("last_deployed")),
                  config=release.get("config") or {})


def deployed(records: list[Record]) -> Record | None:
    """The record the release runs: its newest `deployed` one."""
    return next((r for r in reversed(records) if r.status == "deployed"), None)


def hubflow_revision(records: list[Record], record: Record) -> tuple[str, str] | None:
    """(env, revision) hubflow deployed in `record`, following helm's "Rollback to N" to the record it restored;
    None when no hubflow description is found (deployed by hand, or history pruned)."""
    by_version = {r.version: r for r in records}
    seen = set()
    while record is not None and record.version not in seen:
        seen.add(record.version)
        if m := DESCRIPTION.match(record.description):
            return m["env"], m["revision"]
        back = ROLLED_BACK.match(record.description)
        record = by_version.get(int(back[1])) if back else None
    return None


class HelmReleases:
    """Read release records with a kubernetes ApiClient that may list and get Secrets in the hubs' namespaces."""

    def __init__(self, api_client: k8s.ApiClient, timeout: float = 30):
        self.core = k8s.CoreV1Api(api_client)
        self.timeout = timeout

    def records(self, release: str, namespace: str) -> list[Record]:
        """Every stored revision of `release`, oldest first ([] when helm has none)."""
        try:
            secrets = self.core.list_namespaced_secret(namespace, label_selector=f"owner=helm,name={release}",
                                                       _request_timeout=self.timeout).items
        except ApiException as exc:
            if exc.status == 404:
                return []
            raise ReleaseError(f"cannot list the helm records of {namespace}/{release}: the Kubernetes API answered "
                               f"{exc.status} {exc.reason}") from None
        except urllib3.exceptions.HTTPError as exc:
            raise ReleaseError(f"cannot reach the Kubernetes API to read {namespace}/{release}: "
                               f"{type(exc).__name__}") from None
        return sorted((record_of(s) for s in secrets), key=lambda r: r.version)
