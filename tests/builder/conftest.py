"""Fixtures of the docker builder's tests: Debian podman's Docker-compatible API service with its configuration and
storage in a temporary directory, the real local registry (open and with htpasswd), and a small deployment
repository whose image builds without RUN steps (RUN cannot run on these machines)."""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests

from sandbox.registry_server import RegistryServer

PODMAN_CONF = {
    # no cgroups here: podman must neither create nor manage any; its own state stays in this session's folder
    "containers.conf": '[containers]\ncgroups = "disabled"\n[engine]\ncgroup_manager = "cgroupfs"\n'
                       'events_logger = "none"\ntmp_dir = "{root}/tmp"\n',
    # the loopback registries speak plain HTTP
    "registries.conf": 'unqualified-search-registries = []\n[[registry]]\nlocation = "127.0.0.1"\ninsecure = true\n',
    "storage.conf": '[storage]\ndriver = "vfs"\nrunroot = "{root}/run"\ngraphroot = "{root}/graph"\n',
}
IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.org"}


@pytest.fixture(scope="session")
def docker_host(tmp_path_factory) -> str:
    """`unix://...` of a podman API service started for this session (stopped at its end)."""
    root = tmp_path_factory.mktemp("podman")
    env = dict(os.environ)
    for name, text in PODMAN_CONF.items():
        (root / name).write_text(text.format(root=root))
    env.update(CONTAINERS_CONF=str(root / "containers.conf"),
               CONTAINERS_REGISTRIES_CONF=str(root / "registries.conf"),
               CONTAINERS_STORAGE_CONF=str(root / "storage.conf"))
    socket = root / "podman.sock"
    with open(root / "service.log", "wb") as log:
        proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{socket}"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not socket.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"podman system service did not start: {(root / 'service.log').read_text()}")
            time.sleep(0.05)
        yield f"unix://{socket}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    with RegistryServer(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory):
    with RegistryServer(tmp_path_factory.mktemp("auth-registry"), users={"pusher": "pw-9f1c2e"}) as reg:
        yield reg


def manifest_digest(reg: RegistryServer, name: str, tag: str, auth=None) -> str | None:
    """What the registry itself reports for `name:tag` (HEAD of the manifest), None when it has no such tag."""
    r = requests.head(f"{reg.url}/v2/{name}/manifests/{tag}", auth=auth, timeout=10, headers={
        "Accept": "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"})
    return r.headers["Docker-Content-Digest"] if r.status_code == 200 else None


class DeployRepo:
    """A deployment repository with one image, `hello` (images/hello), whose registry repository is `repository`."""

    def __init__(self, path: Path, repository: str):
        self.path = path
        self.repository = repository
        path.mkdir(parents=True)
        self.git("init", "-q", "-b", "staging")
        self.commit({"hubflow-fleet.yaml": f"chart: hub\nimages:\n  - name: hello\n    paths: [images/hello]\n"
                                           f"    repository: {repository}\n",
                     "hub/Chart.yaml": "apiVersion: v2\nname: hub\nversion: 0.1.0\n",
                     "images/hello/hello.txt": "hello\n"}, "fleet")

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.path), *args], check=True, capture_output=True, text=True,
                              env=dict(os.environ, **IDENTITY)).stdout.strip()

    def commit(self, files: dict[str, str], message: str) -> str:
        for name, text in files.items():
            (self.path / name).parent.mkdir(parents=True, exist_ok=True)
            (self.path / name).write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def deploy_repo(tmp_path, registry, request):
    """A fresh repository per test; its image repository is named after the test, so tags never collide."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return DeployRepo(tmp_path / "repo", f"{registry.host}/datahub/{name}")


SETTINGS = """\
repository:
  github: datahub/datahub
  clone_url: https://github.com/datahub/datahub.git
environments:
  - name: staging
    branch: staging
    hub_url: "https://{hub}-staging.example.org"
    builder: docker
"""


@pytest.fixture(scope="session")
def settings_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("settings") / "hubflow.yaml"
    path.write_text(SETTINGS)
    return path
