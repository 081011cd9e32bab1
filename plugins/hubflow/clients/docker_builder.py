"""Build one image of a plan with the Docker Engine API and push it (an environment's `builder: docker`).

The build context is the image's folder at the plan's head, made by `git archive` (no checkout, nothing else from
the worker's disk reaches the engine). The SDK's low-level API streams the build, so each log line reaches
`on_line` while the engine works (`images.build()` returns only at the end). The pull of the earlier tag (the
layer cache) and the push answer errors inside the stream, where the SDK does not raise: both streams are scanned,
and the digest is taken from the push's own report. Registry credentials travel only in the X-Registry-Auth header
(`auth_config`), never in a log line or an error; without them the SDK uses the user's `docker login`.

A failure is a DockerBuildError naming the stage it stopped at; hubflow.core.builds judges who is to blame.
"""
from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import docker
import requests
from docker.constants import DEFAULT_DOCKER_API_VERSION, MINIMUM_DOCKER_API_VERSION
from docker.errors import APIError, DockerException
from docker.utils import kwargs_from_env, version_lt

from hubflow.clients.git import GitError, run_git
from hubflow.clients.registry import Credentials, split_reference
from hubflow.core.builds import BUILD, CONTEXT, ENGINE, PUSH
from hubflow.core.errors import HubflowError

if TYPE_CHECKING:
    from hubflow.clients.git import Repo
    from hubflow.core.plan import Plan

REVISION_LABEL = "org.opencontainers.image.revision"
_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")  # podman reports the digest only in a status line


class DockerBuildError(HubflowError):
    """The image was not built or not pushed; `stage` is one of hubflow.core.builds.STAGES."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


class DockerBuilder:
    """One Docker Engine (`host`, else the worker's DOCKER_HOST / DOCKER_TLS_* settings, else the local socket)."""

    def __init__(self, host: str | None = None, credentials: Credentials | None = None, timeout: float = 3600):
        kwargs = kwargs_from_env()
        if host:
            kwargs["base_url"] = host
        self.where = kwargs.get("base_url") or "the local Docker socket"
        self.credentials = credentials
        self.api = docker.APIClient(version=self._negotiate(kwargs), timeout=timeout, **kwargs)

    def _negotiate(self, kwargs: dict) -> str:
        """The API version to speak: the engine's, up to the SDK's (as the docker CLI does, from GET /_ping; the
        SDK's own "auto" asks GET /version, which podman answers only after running its helpers, in seconds)."""
        try:
            with docker.APIClient(version=DEFAULT_DOCKER_API_VERSION, **kwargs) as probe:
                answer = probe.get(f"{probe.base_url}/_ping", timeout=30)
                answer.raise_for_status()
        except (DockerException, requests.RequestException) as exc:
            raise DockerBuildError(ENGINE, f"cannot reach the Docker engine at {self.where}: {exc}") from None
        server = answer.headers.get("API-Version") or MINIMUM_DOCKER_API_VERSION
        return server if version_lt(server, DEFAULT_DOCKER_API_VERSION) else DEFAULT_DOCKER_API_VERSION

    def build_image(self, repo: Repo, plan: Plan, name: str, cache_tag: str | None = None, push: bool = True,
                    on_line: Callable[[str], None] = print) -> dict:
        """Build image `name` of `plan` at its head as `<repository>:<tag>` and push it.

        Returns {"image", "repository", "tag", "digest"} (digest: what the registry stored; None without `push`).
        """
        if plan.fleet is None:
            raise DockerBuildError(CONTEXT, "the plan carries no fleet: make it with hubflow.core.plan.make_plan")
        image, spec = plan.image(name), plan.fleet.image(name)
        ref = image.ref
        try:
            context = run_git(["-C", str(repo.path), "archive", "--format=tar", "--end-of-options",
                               f"{plan.head}:{spec.build_context}"], what=f"the build context of {name}").stdout
        except GitError as exc:
            raise DockerBuildError(CONTEXT, str(exc)) from None
        cache_from = None
        if cache_tag and self._pull(image.repository, cache_tag, on_line):
            cache_from = [f"{image.repository}:{cache_tag}"]
        on_line(f"building {ref} from {spec.build_context} at {plan.head[:12]} with {self.where}")
        self._build(context, spec.dockerfile, ref, plan.head, cache_from, on_line)
        digest = self._push(image.repository, image.tag, on_line) if push else None
        return {"image": name, "repository": image.repository, "tag": image.tag, "digest": digest}

    def _auth(self, repository: str) -> dict | None:
        """The connection's credentials, only for the registry they name."""
        c = self.credentials
        if c and c.login and c.registry == split_reference(repository)[0]:
            return {"username": c.login, "password": c.password or ""}
        return None

    def _pull(self, repository: str, tag: str, on_line: Callable[[str], None]) -> bool:
        """Pull the earlier tag so its layers can serve as cache; any failure only means a build without it."""
        ref = f"{repository}:{tag}"
        try:
            for chunk in self.api.pull(repository, tag=tag, stream=True, decode=True,
                                       auth_config=self._auth(repository)):
                if "error" in chunk:
                    on_line(f"no layer cache from {ref}: {_text(chunk['error'])}")
                    return False
        except (APIError, requests.RequestException) as exc:
            on_line(f"no layer cache from {ref}: {_text(str(exc))}")
            return False
        on_line(f"layer cache from {ref}")
        return True

    def _build(self, context: bytes, dockerfile: str, ref: str, revision: str, cache_from: list[str] | None,
               on_line: Callable[[str], None]) -> None:
        try:
            for chunk in self.api.build(fileobj=io.BytesIO(context), custom_context=True, dockerfile=dockerfile,
                                        tag=ref, labels={REVISION_LABEL: revision}, cache_from=cache_from,
                                        rm=True, forcerm=True, decode=True):
                if "error" in chunk:
                    raise DockerBuildError(BUILD, f"{ref}: {_text(chunk['error'])}")
                for line in (chunk.get("stream") or "").splitlines():
                    if line.strip():
                        on_line(line.rstrip())
        except APIError as exc:  # refused before the build started: a bad request is the Dockerfile's
            raise DockerBuildError(BUILD if exc.is_client_error() else ENGINE,
                                   f"{ref}: {_text(exc.explanation or str(exc))}") from None
        except requests.RequestException as exc:
            raise DockerBuildError(ENGINE, f"the Docker engine at {self.where} broke off the build of {ref}: "
                                           f"{type(exc).__name__}") from None

    def _push(self, repository: str, tag: str, on_line: Callable[[str], None]) -> str:
        ref = f"{repository}:{tag}"
        digest = None
        try:
            for chunk in self.api.push(repository, tag=tag, stream=True, decode=True,
                                       auth_config=self._auth(repository)):
                if "error" in chunk:
                    raise DockerBuildError(PUSH, f"{ref} was not pushed: {_text(chunk['error'])}")
                status = chunk.get("status") or ""
                found = _DIGEST.search(status)
                digest = (chunk.get("aux") or {}).get("Digest") or (found and found.group(1)) or digest
                if status and not chunk.get("progressDetail"):  # per-layer progress is left out
                    on_line(f"{chunk['id']}: {status}" if chunk.get("id") else status)
        except APIError as exc:
            raise DockerBuildError(PUSH, f"{ref} was not pushed: {_text(exc.explanation or str(exc))}") from None
        except requests.RequestException as exc:
            raise DockerBuildError(ENGINE, f"the Docker engine at {self.where} broke off the push of {ref}: "
                                           f"{type(exc).__name__}") from None
        if not digest:
            raise DockerBuildError(PUSH, f"the push of {ref} ended without a digest: it may not have completed")
        on_line(f"pushed {ref} ({digest})")
        return digest


def _text(message) -> str:
    return str(message).strip()
