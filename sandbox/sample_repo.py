"""A DataHub-like deployment repository, generated with real git, for tests, benchmarks and the local demo.

Layout (as in berkeley-dsep-infra/datahub): hub/ (shared chart), images/<name>/, deployments/<hub>/ with
config/{common,staging,prod}.yaml, sops-style secrets/{staging,prod}.yaml and a small hubflow-hub.yaml that the
fleet discovers. Hubs: datahub and data8 share image `primary`, biology uses `datascience`, rhub runs an external image.
Extra generated hubs (for benchmarks) alternate between the two images.

    python -m sandbox.sample_repo PATH [--hubs N] [--bare ORIGIN]
"""
from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

FLEET = """\
# hubflow fleet: what this repository deploys. Checked by `hubflow validate`.
chart: hub
redeploy_all:
  - hub/**
deploy_nothing:
  - docs/**
  - "**/*.md"
images:
  - name: primary
    paths: [images/primary]
    repository: {registry}/datahub/primary
  - name: datascience
    paths: [images/datascience]
    repository: {registry}/datahub/datascience
hub_defaults:
  values:
    common: [config/common.yaml]
    staging: [config/staging.yaml, secrets/staging.yaml]
    prod: [config/prod.yaml, secrets/prod.yaml]
hub_discovery:
  - pattern: deployments/*/hubflow-hub.yaml
"""

SOPS_SECRET = """\
jupyterhub:
  hub:
    config:
      GenericOAuthenticator:
        client_secret: ENC[AES256_GCM,data:q8Y3ZmFrZQ==,iv:aXY=,tag:dGFn,type:str]
sops:
  kms: []
  gcp_kms:
    - resource_id: projects/datahub/locations/global/keyRings/sops/cryptoKeys/sops
  lastmodified: "2026-11-01T00:00:00Z"
  mac: ENC[AES256_GCM,data:bWFj,iv:aXY=,tag:dGFn,type:str]
  version: 3.9.0
"""

BASE_HUBS = {
    "datahub": "images: [primary]\nsmoke:\n  packages: [requests]\n",
    "data8": "images: [primary]\n",
    "biology": "images: [datascience]\n",
    "rhub": "external_image: docker.io/rocker/binder:4.4.1\n",
}


def sample_files(hubs: int = 4, registry: str = "127.0.0.1:5000") -> dict[str, str]:
    """Path -> content of the sample repository with `hubs` hubs (the four named ones first)."""
    files = {
        "hubflow-fleet.yaml": FLEET.replace("{registry}", registry),
        "README.md": "# datahub\nDeployments of the sample fleet.\n",
        "docs/index.md": "# Operator docs\n",
        "hub/Chart.yaml": "apiVersion: v2\nname: hub\nversion: 0.1.0\ndependencies:\n"
                          "  - name: jupyterhub\n    version: 4.1.0\n    repository: https://hub.jupyter.org/helm-chart/\n",
        "hub/values.yaml": "jupyterhub:\n  hub:\n    db:\n      type: sqlite-pvc\n",
        "images/primary/Dockerfile": "FROM quay.io/jupyter/minimal-notebook:2025-01-06\nCOPY environment.yml /tmp/\n",
        "images/primary/environment.yml": "name: primary\ndependencies:\n  - python=3.12\n  - numpy=2.1.3\n  - pip:\n    - otter-grader==6.0.0\n",
        "images/primary/README.md": "The primary image.\n",
        "images/datascience/Dockerfile": "FROM quay.io/jupyter/scipy-notebook:2025-01-06\nCOPY requirements.txt /tmp/\n",
        "images/datascience/requirements.txt": "pandas==2.2.3\nscikit-learn==1.5.2\n",
    }
    names = (list(BASE_HUBS) + [f"hub{i:03d}" for i in range(max(0, hubs - len(BASE_HUBS)))])[:hubs]
    for n, name in enumerate(names):
        d = f"deployments/{name}"
        files[f"{d}/hubflow-hub.yaml"] = BASE_HUBS.get(name, f"images: [{('primary', 'datascience')[n % 2]}]\n")
        files[f"{d}/config/common.yaml"] = f"jupyterhub:\n  custom:\n    hub: {name}\n"
        for env in ("staging", "prod"):
            files[f"{d}/config/{env}.yaml"] = f"jupyterhub:\n  ingress:\n    hosts: [{name}-{env}.example.org]\n"
            files[f"{d}/secrets/{env}.yaml"] = SOPS_SECRET
        files[f"{d}/README.md"] = f"# {name}\n"
    return files


def git(path: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="Sample", GIT_AUTHOR_EMAIL="sample@example.org",
               GIT_COMMITTER_NAME="Sample", GIT_COMMITTER_EMAIL="sample@example.org")
    return subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True, text=True, env=env).stdout


def write_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def commit(root: Path, message: str, files: dict[str, str | None] | None = None) -> str:
    """Write (or, with None, delete) files, commit everything, return the new sha."""
    for rel, text in (files or {}).items():
        if text is None:
            git(root, "rm", "-q", "-r", rel)
        else:
            write_files(root, {rel: text})
    git(root, "add", "-A")
    git(root, "commit", "-q", "--allow-empty", "-m", message)
    return git(root, "rev-parse", "HEAD").strip()


def make_sample_repo(path: str | os.PathLike, hubs: int = 4, bare: str | os.PathLike | None = None,
                     registry: str = "127.0.0.1:5000") -> Path:
    """Create the sample repository at `path` on branch `staging` with `prod` at the same commit.

    With `bare`, also create a bare clone there (the `origin` that pods and the GitHub emulator use) and push both branches.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "staging")
    write_files(root, sample_files(hubs, registry))
    commit(root, "Initial fleet")
    git(root, "branch", "prod")
    if bare:
        subprocess.run(["git", "init", "-q", "--bare", "-b", "staging", str(bare)], check=True)
        git(root, "remote", "add", "origin", str(bare))
        git(root, "push", "-q", "origin", "staging", "prod")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--hubs", type=int, default=4)
    parser.add_argument("--bare", help="also create a bare origin here and push staging and prod")
    args = parser.parse_args()
    print(make_sample_repo(args.path, args.hubs, args.bare))


if __name__ == "__main__":
    main()
