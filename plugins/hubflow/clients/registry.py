"""Does `<repository>:<tag>` exist? The OCI distribution API, so builds of images already pushed are skipped.

One HEAD of the manifest, with the answers of GHCR, Artifact Registry, Docker Hub and the reference registry:
a bearer-token challenge (`WWW-Authenticate: Bearer realm=...,service=...,scope=...`) is answered at the realm with
the credentials (or anonymously), a Basic challenge with the credentials. Not found is `False`; refused credentials,
an unreachable registry and any other answer are distinct errors that name the registry and the image.

No Airflow here: `RegistryClient` takes host/login/password (hubflow.airflow.hooks reads them from a connection).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

from hubflow.core.errors import HubflowError

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
DOCKER_HUB = "registry-1.docker.io"
_DOCKER_HUB_NAMES = {"docker.io", "index.docker.io", DOCKER_HUB}
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(HubflowError):
    """The registry gave an answer hubflow cannot use."""


class RegistryAuthError(RegistryError):
    """The registry refused the credentials, or needs credentials and none were given."""


class RegistryUnreachable(RegistryError):
    """No answer from the registry (connection refused, DNS, TLS, timeout)."""


@dataclass(frozen=True)
class Credentials:
    """Who to be at one registry. `host` is `name[:port]`, optionally with `http://` or `https://`."""

    host: str
    login: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def registry(self) -> str:
        return registry_host(self.host)


def registry_host(host: str) -> str:
    """`host[:port]` without scheme or path; Docker Hub's aliases become its API host."""
    name = urlsplit(host).netloc if "://" in host else host.split("/", 1)[0]
    return DOCKER_HUB if name in _DOCKER_HUB_NAMES else name


def split_reference(repository: str) -> tuple[str, str]:
    """(`registry host`, `path`) of an image repository, with Docker's rules for names without a registry."""
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, path = registry_host(first), rest
    else:
        host, path = DOCKER_HUB, repository
    if host == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return host, path


def base_url(host: str) -> str:
    """https, except an explicit http:// or a loopback registry (as Docker treats them)."""
    if "://" in host:
        parts = urlsplit(host)
        return f"{parts.scheme}://{parts.netloc}"
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    loopback = name in ("localhost", "[::1]") or name.startswith("127.")
    return f"{'http' if loopback else 'https'}://{host}"


class RegistryClient:
    """HEAD manifests with the challenge flows; credentials apply only to the registry they name.

    Keeps its HTTP connections and bearer tokens (a refused token is asked for again), so one client per process
    and credentials serves every check (hubflow.airflow.hooks.RegistryHook keeps it; not across a fork)."""

    def __init__(self, credentials: Credentials | None = None, timeout: float = 15.0):
        self.credentials = credentials
        self.timeout = timeout
        self.session = requests.Session()
        self._tokens: dict[tuple[str, str], str] = {}

    def close(self) -> None:
        """Close the session's pooled connections; the client stays usable (a later check connects again)."""
        self.session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _auth_for(self, host: str) -> tuple[str, str] | None:
        c = self.credentials
        if c and c.login and c.registry == host:
            return c.login, c.password or ""
        return None

    def _url(self, host: str) -> str:
        c = self.credentials
        return base_url(c.host) if c and c.registry == host else base_url(host)

    def exists(self, repository: str, tag: str) -> bool:
        """True when the registry has a manifest for `repository:tag`, False when it answers not found."""
        return self.digest(repository, tag) is not None

    def digest(self, repository: str, tag: str) -> str | None:
        """The manifest digest of `repository:tag` (what a pull gets), None when the registry has no such tag."""
        host, path = split_reference(repository)
        image = f"{repository}:{tag}"
        url = f"{self._url(host)}/v2/{path}/manifests/{tag}"
        headers = {"Accept": MANIFEST_TYPES}
        token = self._tokens.get((host, path))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = self._head(url, headers, image)
        if response.status_code == 401:
            headers, auth = self._answer_challenge(response, host, path, image)
            response = self._head(url, headers, image, auth)
            if response.status_code == 401:
                raise RegistryAuthError(f"{host} refused the credentials for {image}"
                                        if self._auth_for(host) else f"{host} needs credentials to read {image}")
        if not self._verdict(response, host, image):
            return None
        return response.headers.get("Docker-Content-Digest") or "unknown"

    def missing(self, images: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The (repository, tag) pairs that the registry does not have (in the given order)."""
        return [(repository, tag) for repository, tag in images if not self.exists(repository, tag)]

    def _head(self, url: str, headers: dict[str, str], image: str,
              auth: tuple[str, str] | None = None) -> requests.Response:
        try:
            return self.session.head(url, headers=headers, auth=auth, timeout=self.timeout, allow_redirects=True)
        except requests.RequestException as exc:
            raise RegistryUnreachable(f"cannot reach the registry of {image} at {url.split('/v2/')[0]}: "
                                      f"{type(exc).__name__}") from None

    def _verdict(self, response: requests.Response, host: str, image: str) -> bool:
        code = response.status_code
        if code == 200:
            return True
        if code == 404:
            return False
        if code == 403:
            raise RegistryAuthError(f"{host} denied access to {image} (403): the credentials lack pull permission")
        if code in (429, 502, 503, 504):
            raise RegistryUnreachable(f"{host} is unavailable ({code}) while checking {image}")
        raise RegistryError(f"{host} answered {code} to a manifest check of {image}")

    def _answer_challenge(self, response: requests.Response, host: str, path: str,
                          image: str) -> tuple[dict[str, str], tuple[str, str] | None]:
        """Headers and basic auth for the retry: a bearer token fetched from the realm, or the credentials."""
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        auth = self._auth_for(host)
        headers = {"Accept": MANIFEST_TYPES}
        if scheme == "basic":
            if not auth:
                raise RegistryAuthError(f"{host} needs credentials to read {image}")
            return headers, auth
        if scheme != "bearer":
            raise RegistryError(f"{host} asked for an unknown authentication scheme: {challenge[:100]!r}")
        params = dict(_CHALLENGE.findall(challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise RegistryError(f"{host} sent a bearer challenge without a realm")
        params.setdefault("scope", f"repository:{path}:pull")
        try:
            r = self.session.get(realm, params=params, auth=auth, timeout=self.timeout)
        except requests.RequestException as exc:
            raise RegistryUnreachable(f"cannot reach the token service of {host} at {realm}: "
                                      f"{type(exc).__name__}") from None
        if r.status_code in (401, 403):
            raise RegistryAuthError(f"the token service of {host} refused the credentials for {image} "
                                    f"({r.status_code})")
        if r.status_code != 200:
            raise RegistryError(f"the token service of {host} answered {r.status_code} for {image}")
        try:
            body = r.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise RegistryError(f"the token service of {host} answered without a token")
        self._tokens[(host, path)] = token
        return headers | {"Authorization": f"Bearer {token}"}, None
