"""The registry client against Debian's docker-registry on loopback (anonymous and htpasswd), and a bearer flow."""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hubflow.clients.registry import (
    Credentials,
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    RegistryUnreachable,
    base_url,
    split_reference,
)
from sandbox.registry_server import RegistryServer, free_port


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory):
    with RegistryServer(tmp_path_factory.mktemp("registry-open")) as reg:
        reg.push("datahub/primary", "a1b2c3d4e5f6")
        yield reg


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory):
    with RegistryServer(tmp_path_factory.mktemp("registry-auth"), users={"pusher": "s3cret-pw"}) as reg:
        reg.push("datahub/primary", "a1b2c3d4e5f6")
        yield reg


def test_a_pushed_tag_exists_and_another_does_not(open_registry):
    client = RegistryClient()
    repo = f"{open_registry.host}/datahub/primary"
    assert client.exists(repo, "a1b2c3d4e5f6") is True
    assert client.exists(repo, "ffffffffffff") is False
    assert client.exists(f"{open_registry.host}/datahub/never-pushed", "a1b2c3d4e5f6") is False
    assert client.missing([(repo, "a1b2c3d4e5f6"), (repo, "0000aaaa0000")]) == [(repo, "0000aaaa0000")]


def test_basic_auth_with_the_right_credentials(private_registry):
    client = RegistryClient(Credentials(private_registry.host, "pusher", "s3cret-pw"))
    repo = f"{private_registry.host}/datahub/primary"
    assert client.exists(repo, "a1b2c3d4e5f6") is True
    assert client.exists(repo, "ffffffffffff") is False


def test_wrong_or_missing_credentials_are_an_auth_error_not_a_missing_image(private_registry):
    repo = f"{private_registry.host}/datahub/primary"
    with pytest.raises(RegistryAuthError, match="refused the credentials"):
        RegistryClient(Credentials(private_registry.host, "pusher", "wrong")).exists(repo, "a1b2c3d4e5f6")
    with pytest.raises(RegistryAuthError, match="needs credentials"):
        RegistryClient().exists(repo, "a1b2c3d4e5f6")


def test_credentials_for_another_registry_are_not_sent(private_registry):
    client = RegistryClient(Credentials("ghcr.io", "pusher", "s3cret-pw"))
    with pytest.raises(RegistryAuthError, match="needs credentials"):
        client.exists(f"{private_registry.host}/datahub/primary", "a1b2c3d4e5f6")


def test_an_unreachable_registry_is_its_own_error():
    port = free_port()
    with pytest.raises(RegistryUnreachable, match=f"cannot reach the registry of 127.0.0.1:{port}/x/y:t"):
        RegistryClient(timeout=2).exists(f"127.0.0.1:{port}/x/y", "t")


@pytest.mark.parametrize("repository,expected", [
    ("ghcr.io/org/image", ("ghcr.io", "org/image")),
    ("us-central1-docker.pkg.dev/proj/repo/primary", ("us-central1-docker.pkg.dev", "proj/repo/primary")),
    ("127.0.0.1:5000/datahub/primary", ("127.0.0.1:5000", "datahub/primary")),
    ("localhost/x", ("localhost", "x")),
    ("jupyter/scipy-notebook", ("registry-1.docker.io", "jupyter/scipy-notebook")),
    ("ubuntu", ("registry-1.docker.io", "library/ubuntu")),
    ("docker.io/rocker/binder", ("registry-1.docker.io", "rocker/binder")),
])
def test_references_split_like_docker_does(repository, expected):
    assert split_reference(repository) == expected


def test_loopback_registries_speak_http_others_https():
    assert base_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert base_url("ghcr.io") == "https://ghcr.io"
    assert base_url("http://registry.internal:5000") == "http://registry.internal:5000"


class TokenRegistry:
    """A registry stand-in with a token service: HEAD answers 401 Bearer until given the token the realm issued."""

    def __init__(self):
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code, body=b"", headers=()):
                self.send_response(code)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_GET(self):
                outer.requests.append(("GET", self.path, dict(self.headers)))
                if not self.path.startswith("/token?"):
                    return self._reply(404, b"no route for GET " + self.path.encode())
                if self.headers.get("Authorization") != "Basic " + base64.b64encode(b"bot:tok").decode():
                    return self._reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}')
                self._reply(200, json.dumps({"token": "issued-123"}).encode())

            def do_HEAD(self):
                outer.requests.append(("HEAD", self.path, dict(self.headers)))
                if self.headers.get("Authorization") != "Bearer issued-123":
                    challenge = (f'Bearer realm="{outer.url}/token",service="test-registry",'
                                 f'scope="repository:org/image:pull"')
                    return self._reply(401, headers=[("WWW-Authenticate", challenge)])
                self._reply(200 if self.path.endswith("/manifests/v1") else 404,
                            headers=[("Docker-Content-Digest", "sha256:" + "0" * 64)])

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def token_registry():
    reg = TokenRegistry()
    yield reg
    reg.server.shutdown()


def test_bearer_challenge_flow(token_registry):
    host = token_registry.url.split("://")[1]
    client = RegistryClient(Credentials(token_registry.url, "bot", "tok"))
    assert client.exists(f"{host}/org/image", "v1") is True
    head, token, retry = token_registry.requests[:3]
    assert head[0] == "HEAD" and "application/vnd.oci.image.index.v1+json" in head[2]["Accept"]
    assert token[1] == "/token?service=test-registry&scope=repository%3Aorg%2Fimage%3Apull"
    assert retry[2]["Authorization"] == "Bearer issued-123"
    assert client.exists(f"{host}/org/image", "v2") is False
    assert len(token_registry.requests) == 4  # the token is reused for the same repository


def test_bearer_flow_with_refused_credentials(token_registry):
    host = token_registry.url.split("://")[1]
    with pytest.raises(RegistryAuthError, match="token service .* refused the credentials"):
        RegistryClient(Credentials(token_registry.url, "bot", "wrong")).exists(f"{host}/org/image", "v1")


def test_credentials_from_an_airflow_connection(monkeypatch):
    from hubflow.airflow import hooks
    from hubflow.core.settings import load_settings

    monkeypatch.setenv("AIRFLOW_CONN_HUBFLOW_REGISTRY", json.dumps(
        {"conn_type": "generic", "host": "127.0.0.1", "port": 5000, "login": "pusher", "password": "s3cret-pw"}))
    creds = hooks.registry(load_settings()).credentials
    assert (creds.host, creds.login, creds.password) == ("127.0.0.1:5000", "pusher", "s3cret-pw")
    assert "s3cret" not in repr(creds)
    monkeypatch.setenv("AIRFLOW_CONN_HUBFLOW_REGISTRY", json.dumps({"conn_type": "generic", "login": "x"}))
    with pytest.raises(RegistryError, match="has no host"):
        hooks.registry(load_settings())
