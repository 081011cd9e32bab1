"""The docker builder against real podman (its Docker-compatible API) and the real local registry: the log streams
while the build runs, the push lands with the digest the registry reports, a bad Dockerfile is the revision's fault,
a registry that refuses or is gone is the platform's and never a success; `hubflow build` as a command."""
from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import docker
import pytest

from hubflow.clients.docker_builder import REVISION_LABEL, DockerBuilder, DockerBuildError
from hubflow.clients.git import Repo
from hubflow.clients.registry import Credentials
from hubflow.core.builds import build_fault
from hubflow.core.plan import make_plan
from hubflow.k8s.pods import previous_tags
from sandbox.registry_server import RegistryServer
from tests.builder.conftest import DeployRepo, manifest_digest

HUBFLOW = Path(sys.executable).parent / "hubflow"


def plan_of(repo, head: str, base: str | None = None):
    return make_plan(Repo(repo.path), base, head, "hubflow-fleet.yaml", ["staging"])


def path_in(repository: str) -> str:
    """The repository's path in its registry."""
    return repository.split("/", 1)[1]


@pytest.fixture
def gate():
    """An HTTP file the Dockerfile ADDs: its answer waits until `gate.open` is set (at most 15 s), so the build
    cannot end before then."""
    opened = threading.Event()
    waited: list[bool] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            waited.append(opened.wait(15))
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"gate\n")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.open, server.waited = opened, waited
    yield server
    server.shutdown()
    server.server_close()


def test_the_log_streams_while_the_build_runs_and_the_push_lands_with_the_registry_digest(
        docker_host, registry, deploy_repo, gate):
    head = deploy_repo.commit({"images/hello/Dockerfile": "FROM scratch\nCOPY hello.txt /hello.txt\n"
                                                          f"ADD http://127.0.0.1:{gate.server_port}/gate /gate\n"},
                              "image")
    plan = plan_of(deploy_repo, head)
    lines: list[str] = []

    def on_line(line: str) -> None:
        lines.append(line)
        if line.startswith("STEP 3/"):  # the ADD step: only a line that arrives now lets the build finish
            gate.open.set()

    result = DockerBuilder(docker_host).build_image(Repo(deploy_repo.path), plan, "hello", on_line=on_line)

    assert gate.waited == [True], "the build could only end after a log line reached the callback"
    tag = plan.image("hello").tag
    assert result == {"image": "hello", "repository": deploy_repo.repository, "tag": tag,
                      "digest": manifest_digest(registry, path_in(deploy_repo.repository), tag)}
    assert result["digest"].startswith("sha256:")
    assert lines.index("STEP 1/4: FROM scratch") < lines.index(f"pushed {deploy_repo.repository}:{tag} "
                                                                 f"({result['digest']})")
    labels = docker.APIClient(base_url=docker_host).inspect_image(f"{deploy_repo.repository}:{tag}")["Config"]["Labels"]
    assert labels[REVISION_LABEL] == head


def test_the_build_pulls_the_earlier_tag_as_its_cache(docker_host, registry, deploy_repo):
    base = deploy_repo.commit({"images/hello/Dockerfile": "FROM scratch\nCOPY hello.txt /hello.txt\n"}, "image")
    builder = DockerBuilder(docker_host)
    first = builder.build_image(Repo(deploy_repo.path), plan_of(deploy_repo, base), "hello", on_line=lambda _: None)
    docker.APIClient(base_url=docker_host).remove_image(f"{deploy_repo.repository}:{first['tag']}", force=True)
    head = deploy_repo.commit({"images/hello/hello.txt": "hello again\n"}, "change the image")
    plan = plan_of(deploy_repo, head, base)
    cache = previous_tags(Repo(deploy_repo.path), plan, "hubflow-fleet.yaml", ["staging"])
    assert cache == {"hello": first["tag"]}
    lines: list[str] = []

    second = builder.build_image(Repo(deploy_repo.path), plan, "hello", cache["hello"], on_line=lines.append)

    assert f"layer cache from {deploy_repo.repository}:{first['tag']}" in lines
    assert second["tag"] != first["tag"] and second["digest"] == manifest_digest(
        registry, path_in(deploy_repo.repository), second["tag"])
    lines.clear()
    builder.build_image(Repo(deploy_repo.path), plan, "hello", "0000deadbeef", push=False, on_line=lines.append)
    assert any(line.startswith(f"no layer cache from {deploy_repo.repository}:0000deadbeef: ") for line in lines)


def test_a_dockerfile_that_fails_is_the_revisions_fault_and_nothing_is_pushed(docker_host, registry, deploy_repo):
    head = deploy_repo.commit({"images/hello/Dockerfile": "FROM scratch\nCOPY missing.txt /missing.txt\n"}, "bad")
    plan = plan_of(deploy_repo, head)

    with pytest.raises(DockerBuildError) as caught:
        DockerBuilder(docker_host).build_image(Repo(deploy_repo.path), plan, "hello", on_line=lambda _: None)

    fault = build_fault(caught.value.stage, str(caught.value))
    assert fault.blame == "revision"
    assert fault.summary.startswith("the image build failed: ") and "missing.txt" in fault.summary
    assert manifest_digest(registry, path_in(deploy_repo.repository), plan.image("hello").tag) is None


def test_a_registry_that_refuses_or_is_gone_is_a_platform_fault_never_a_success(docker_host, auth_registry,
                                                                                tmp_path, caplog):
    repo = DeployRepo(tmp_path / "auth", f"{auth_registry.host}/datahub/private")
    head = repo.commit({"images/hello/Dockerfile": "FROM scratch\nCOPY hello.txt /hello.txt\n"}, "image")
    plan = plan_of(repo, head)
    tag = plan.image("hello").tag
    lines: list[str] = []

    with pytest.raises(DockerBuildError) as refused:
        DockerBuilder(docker_host).build_image(Repo(repo.path), plan, "hello", on_line=lines.append)
    fault = build_fault(refused.value.stage, str(refused.value))
    assert fault.blame == "platform"
    assert fault.summary.startswith(f"the push to the registry failed: {repo.repository}:{tag} was not pushed: ")
    assert "unauthorized" in fault.summary
    assert manifest_digest(auth_registry, "datahub/private", tag, ("pusher", "pw-9f1c2e")) is None

    caplog.set_level("DEBUG")
    credentials = Credentials(host=auth_registry.host, login="pusher", password="pw-9f1c2e")
    result = DockerBuilder(docker_host, credentials).build_image(Repo(repo.path), plan, "hello", on_line=lines.append)
    assert result["digest"] == manifest_digest(auth_registry, "datahub/private", tag, ("pusher", "pw-9f1c2e"))
    assert "pw-9f1c2e" not in "\n".join(lines) + caplog.text + str(refused.value)

    gone = RegistryServer(tmp_path / "gone").start()
    gone.stop()
    repo = DeployRepo(tmp_path / "gone-repo", f"{gone.host}/datahub/gone")
    plan = plan_of(repo, repo.commit({"images/hello/Dockerfile": "FROM scratch\n"}, "image"))
    with pytest.raises(DockerBuildError) as unreachable:
        DockerBuilder(docker_host).build_image(Repo(repo.path), plan, "hello", on_line=lambda _: None)
    fault = build_fault(unreachable.value.stage, str(unreachable.value))
    assert fault.blame == "platform" and "connection refused" in fault.summary


def test_an_engine_that_cannot_be_reached_is_a_platform_fault(tmp_path):
    with pytest.raises(DockerBuildError) as caught:
        DockerBuilder(f"unix://{tmp_path}/none.sock")
    fault = build_fault(caught.value.stage, str(caught.value))
    assert fault.blame == "platform"
    assert fault.summary.startswith(f"the Docker engine could not be used: cannot reach the Docker engine at "
                                       f"unix://{tmp_path}/none.sock")


def hubflow(*args: str, docker_host: str, settings_file: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, DOCKER_HOST=docker_host, DOCKER_CONFIG=str(settings_file.parent / "no-docker-config"))
    return subprocess.run([str(HUBFLOW), *args, "--config", str(settings_file)], env=env, capture_output=True,
                          text=True, timeout=120)


def test_hubflow_build_streams_the_log_prints_the_digest_and_says_what_failed_by_its_exit_code(
        docker_host, registry, deploy_repo, settings_file, tmp_path):
    good = deploy_repo.commit({"images/hello/Dockerfile": "FROM scratch\nCOPY hello.txt /hello.txt\n"}, "image")
    tag = plan_of(deploy_repo, good).image("hello").tag

    done = hubflow("build", "hello", "--revision", good, "--push", "--repo", str(deploy_repo.path),
                   docker_host=docker_host, settings_file=settings_file)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert "STEP 2/3: COPY hello.txt /hello.txt" in out
    assert out[-1] == manifest_digest(registry, path_in(deploy_repo.repository), tag)

    bad = deploy_repo.commit({"images/hello/Dockerfile": "FROM scratch\nCOPY nope.txt /nope.txt\n"}, "bad")
    failed = hubflow("build", "hello", "--revision", bad, "--repo", str(deploy_repo.path),
                     docker_host=docker_host, settings_file=settings_file)
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: the image build failed: ") and "(revision fault)" in failed.stderr

    down = hubflow("build", "hello", "--revision", good, "--repo", str(deploy_repo.path),
                   docker_host=f"unix://{tmp_path}/none.sock", settings_file=settings_file)
    assert down.returncode == 3
    assert "the Docker engine could not be used" in down.stderr and "(platform fault)" in down.stderr
    assert "Traceback" not in failed.stderr + down.stderr
