"""Fixtures of the Kubernetes tests: the API emulator reached through a kubeconfig, test settings, a sample repo."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import airflow_support

airflow_support.setup_environment()

DAGS = Path(__file__).parent / "dags"

SETTINGS = """\
repository:
  github: datahub/datahub
  clone_url: https://github.com/datahub/datahub.git
environments:
  - name: staging
    branch: staging
    kubernetes_conn_id: kubernetes_staging
    hub_url: "https://{hub}-staging.example.org"
    service_account: deployer-staging
  - name: prod
    branch: prod
    kubernetes_conn_id: kubernetes_prod
    hub_url: "https://{hub}.example.org"
    service_account: deployer-prod
    build_images: false
timeouts:
  pod_startup_seconds: 3
  helm_seconds: 900
pods:
  namespace: hubflow
"""


@pytest.fixture(scope="session")
def settings_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("settings") / "hubflow.yaml"
    path.write_text(SETTINGS)
    os.environ["HUBFLOW_K8S_TEST_CONFIG"] = str(path)
    return path


@pytest.fixture(scope="session")
def settings(settings_file):
    from hubflow.core.settings import load_settings

    return load_settings(settings_file)


@pytest.fixture(scope="session")
def _emulator(tmp_path_factory):
    from sandbox.k8s_emulator import K8sEmulator

    emu = K8sEmulator().start()
    kubeconfig = emu.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config")
    for conn_id in ("KUBERNETES_STAGING", "KUBERNETES_PROD"):
        os.environ[f"AIRFLOW_CONN_{conn_id}"] = emu.connection(kubeconfig)
    yield emu
    emu.stop()


@pytest.fixture
def emulator(_emulator):
    _emulator.reset()
    return _emulator


@pytest.fixture(scope="session")
def sample(tmp_path_factory):
    from sandbox.sample_repo import make_sample_repo

    root = tmp_path_factory.mktemp("sample")
    return make_sample_repo(root / "work", bare=root / "origin.git")


@pytest.fixture(scope="session")
def plan(sample, settings):
    from hubflow.clients.git import Repo
    from hubflow.core.plan import make_plan

    return make_plan(Repo(sample), None, "staging", settings.repository.fleet_file, ["staging", "prod"])
