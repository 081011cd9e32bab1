"""Reading helm's release records (Secrets written the way helm writes them) through the Kubernetes API emulator."""
from __future__ import annotations

import base64
import gzip
import json

import pytest
from kubernetes import client as k8s, config as k8s_config

from hubflow.clients.helm_releases import HelmReleases, ReleaseError, decode, deployed, hubflow_revision
from sandbox.k8s_emulator import helm_release_secret

SHA = "a" * 40
SECRET_CONFIG = {"jupyterhub": {"hub": {"config": {"GenericOAuthenticator": {"client_secret": "s3cr3t"}}}}}


@pytest.fixture
def releases(emulator, tmp_path):
    path = emulator.write_kubeconfig(tmp_path / "kubeconfig")
    return HelmReleases(k8s_config.new_client_from_config(str(path)))


def write(emulator, tmp_path, *secrets):
    api = k8s.CoreV1Api(k8s_config.new_client_from_config(str(emulator.write_kubeconfig(tmp_path / "kc"))))
    for s in secrets:
        api.create_namespaced_secret(s["metadata"]["namespace"], s)


def test_records_are_decoded_oldest_first_and_the_values_stay_out_of_the_summary(emulator, releases, tmp_path):
    write(emulator, tmp_path,
          helm_release_secret("datahub-staging", "datahub-staging", 2, "deployed", SECRET_CONFIG,
                              description=f"hubflow staging {SHA}", last_deployed="2026-11-02T07:00:00.123456789Z"),
          helm_release_secret("datahub-staging", "datahub-staging", 1, "superseded", {},
                              description="Install complete"),
          helm_release_secret("data8-staging", "datahub-staging", 1, "deployed", {}))
    records = releases.records("datahub-staging", "datahub-staging")
    assert [(r.version, r.status) for r in records] == [(1, "superseded"), (2, "deployed")]
    current = deployed(records)
    assert current.chart_version == "0.1.0" and current.updated.isoformat() == "2026-11-02T07:00:00.123456+00:00"
    assert current.config == SECRET_CONFIG
    assert "s3cr3t" not in repr(current) and "s3cr3t" not in json.dumps(current.summary())
    assert hubflow_revision(records, current) == ("staging", SHA)
    selector = emulator.calls("GET", "/secrets")[0].query["labelSelector"]
    assert selector == ["owner=helm,name=datahub-staging"]


def test_a_rollback_runs_the_revision_of_the_record_it_restored(emulator, releases, tmp_path):
    write(emulator, tmp_path,
          helm_release_secret("biology-staging", "biology-staging", 3, "superseded", {},
                              description=f"hubflow staging {SHA}"),
          helm_release_secret("biology-staging", "biology-staging", 4, "failed", {},
                              description="hubflow staging " + "b" * 40),
          helm_release_secret("biology-staging", "biology-staging", 5, "deployed", {}, description="Rollback to 3"))
    records = releases.records("biology-staging", "biology-staging")
    assert hubflow_revision(records, deployed(records)) == ("staging", SHA)
    assert hubflow_revision(records[:1] + records[2:], records[2]) == ("staging", SHA)


def test_no_records_and_a_pruned_or_manual_history(emulator, releases, tmp_path):
    assert releases.records("rhub-staging", "rhub-staging") == []
    write(emulator, tmp_path, helm_release_secret("rhub-staging", "rhub-staging", 7, "deployed", {},
                                                  description="Rollback to 2"))
    records = releases.records("rhub-staging", "rhub-staging")
    assert hubflow_revision(records, records[0]) is None


def test_helm_reads_plain_json_too_and_a_damaged_record_is_named(emulator, releases, tmp_path):
    plain = base64.b64encode(base64.b64encode(json.dumps({"name": "x", "version": 1, "info": {"status": "deployed"}})
                                              .encode())).decode()
    assert decode(plain)["info"]["status"] == "deployed"
    bad = helm_release_secret("data8-staging", "data8-staging", 1, "deployed", {})
    bad["data"]["release"] = base64.b64encode(base64.b64encode(gzip.compress(b"{not json"))).decode()
    write(emulator, tmp_path, bad)
    with pytest.raises(ReleaseError, match="data8-staging/sh.helm.release.v1.data8-staging.v1 cannot be decoded"):
        releases.records("data8-staging", "data8-staging")


def test_an_unreachable_api_is_a_release_error(tmp_path):
    configuration = k8s.Configuration()
    configuration.host = "http://127.0.0.1:9"
    configuration.retries = 0
    with pytest.raises(ReleaseError, match="cannot reach the Kubernetes API"):
        HelmReleases(k8s.ApiClient(configuration), timeout=2).records("x", "y")
