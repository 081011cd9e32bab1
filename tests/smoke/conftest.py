"""One real JupyterHub (pip jupyterhub + npm configurable-http-proxy) for the whole session, on loopback."""
import pytest

from sandbox.jupyterhub_local import LocalHub
from tests import airflow_support

airflow_support.setup_environment()  # the task wrapper reads its token from an Airflow connection


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    local = LocalHub(tmp_path_factory.mktemp("jupyterhub")).start()
    yield local
    local.stop()


@pytest.fixture
def clean_hub(hub):
    """The session hub, checked to hold no new user or running server after the test (verifications clean up)."""
    users, servers = set(hub.user_names()), set(hub.running_servers())
    yield hub
    assert set(hub.user_names()) - users == set()
    assert set(hub.running_servers()) - servers == set()
