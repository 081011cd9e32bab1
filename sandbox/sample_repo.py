"""A DataHub-like deployment repository, generated with real git, for tests, benchmarks and the local demo.

Layout (as in berkeley-dsep-infra/datahub): hub/ (a real shared chart, its dependency vendored in hub/charts/),
images/<name>/, deployments/<hub>/ with config/{common,staging,prod}.yaml, secrets/{staging,prod}.yaml encrypted by
sops for a test age key, and a small hubflow-hub.yaml that the fleet discovers. Hubs: datahub and data8 share image
`primary`, biology uses `datascience`, rhub runs an external image.
Extra generated hubs (for benchmarks) alternate between the two images.

    python -m sandbox.sample_repo PATH [--hubs N] [--bare ORIGIN]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
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

# TEST ONLY: the age key the sample's secrets files are encrypted for. It protects nothing; it reaches a runner pod
# only through the Kubernetes Secret `hubflow-sops` (key SOPS_AGE_KEY) that a test creates.
TEST_AGE_KEY = "AGE-SECRET-KEY-1VNQVZ93W8S6RGVD9RPFZ4WLMRQ8FFXH95ZJ8PHAYRQP50AJ4PECSY3Q3VV"
TEST_AGE_RECIPIENT = "age1z0jq3qwnyrlekd4yr032wtwd4vts4gfwgqnlpz0ax5245wqvuqvskmf305"
SECRET_VALUE = "s3cr3t-{env}-client"
"""The decrypted client secret of every hub in `env`: tests look for it where it must (not) appear."""

# hub/: the shared chart. It depends on a small stand-in `jupyterhub` chart served from the local OCI registry and
# vendored in hub/charts/ (with its Chart.lock), so no deploy downloads anything. Its ConfigMap shows the values
# that reach helm: one from each values file and the image override; the secret goes to a Secret only.
CHART_VERSION = "4.1.0"
CHART = {
    "Chart.yaml": "apiVersion: v2\nname: hub\nversion: 0.1.0\ndependencies:\n"
                  f"  - name: jupyterhub\n    version: {CHART_VERSION}\n    repository: oci://{{registry}}/charts\n",
    "values.yaml": "jupyterhub:\n  hub:\n    db:\n      type: sqlite-pvc\n  custom:\n    layer: chart\n"
                   "  singleuser:\n    image:\n      name: quay.io/jupyter/base-notebook\n      tag: latest\n",
    "templates/deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels: {app.kubernetes.io/instance: {{ .Release.Name | quote }}}
spec:
  replicas: 1
  strategy: {type: Recreate}
  selector:
    matchLabels: {app.kubernetes.io/instance: {{ .Release.Name | quote }}}
  template:
    metadata:
      labels: {app.kubernetes.io/instance: {{ .Release.Name | quote }}}
      annotations:
        checksum/values: {{ include (print $.Template.BasePath "/configmap.yaml") . | sha256sum | quote }}
        singleuser-image: {{ include "hub.singleuser" . | quote }}
    spec:
      containers:
        - name: hub
          image: quay.io/jupyterhub/k8s-hub:4.1.0
          ports: [{containerPort: 8081}]
""",
    "templates/_helpers.tpl": """\
{{- define "hub.singleuser" -}}
{{- $image := dig "singleuser" "image" dict (.Values.jupyterhub | default dict) -}}
{{ $image.name }}:{{ $image.tag }}
{{- end }}
""",
    "templates/service.yaml": """\
apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}
spec:
  selector: {app.kubernetes.io/instance: {{ .Release.Name | quote }}}
  ports: [{port: 8081, targetPort: 8081}]
""",
    "templates/configmap.yaml": """\
{{- $hub := .Values.jupyterhub | default dict }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-values
data:
  hub: {{ dig "custom" "hub" "" $hub | quote }}
  layer: {{ dig "custom" "layer" "" $hub | quote }}
  hosts: {{ dig "ingress" "hosts" list $hub | join "," | quote }}
  db: {{ dig "hub" "db" "type" "" $hub | quote }}
""",
    "templates/secret.yaml": """\
{{- $auth := dig "hub" "config" "GenericOAuthenticator" dict (.Values.jupyterhub | default dict) }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ .Release.Name }}-auth
stringData:
  client_secret: {{ $auth.client_secret | default "" | quote }}
""",
}
DEPENDENCY = {  # the stand-in for z2jh: renders the single-user image it is given at jupyterhub.singleuser.image
    "Chart.yaml": f"apiVersion: v2\nname: jupyterhub\nversion: {CHART_VERSION}\n",
    "values.yaml": "singleuser:\n  image:\n    name: quay.io/jupyter/base-notebook\n    tag: latest\n",
    "templates/singleuser.yaml": """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-singleuser
data:
  image: {{ printf "%s:%s" .Values.singleuser.image.name .Values.singleuser.image.tag | quote }}
""",
}
CACHE = Path(tempfile.gettempdir()) / "hubflow-sample-cache"
"""Generated once per machine and content (the sample is made per test): the packaged chart, encrypted files."""

BASE_HUBS = {
    "datahub": "images: [primary]\nsmoke:\n  packages: [requests]\n",
    "data8": "images: [primary]\n",
    "biology": "images: [datascience]\n",
    "rhub": "external_image: docker.io/rocker/binder:4.4.1\n",
}


def tool(name: str) -> str:
    """helm or sops: on PATH, else next to this Python (the project's venv holds both)."""
    return shutil.which(name) or str(Path(sys.executable).parent / name)


def _cached(name: str, key: str, make) -> bytes:
    """The bytes `make(path)` writes, made once per `key` and kept in CACHE (written atomically: tests run in
    parallel processes)."""
    path = CACHE / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}-{name}"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            made = Path(tmp) / name
            make(made)
            os.replace(made, path)
    return path.read_bytes()


def encrypted(plaintext: str) -> str:
    """`plaintext` (YAML) encrypted by real sops for the test age key."""
    def make(out: Path) -> None:
        out.with_suffix(".plain.yaml").write_text(plaintext)
        subprocess.run([tool("sops"), "--encrypt", "--age", TEST_AGE_RECIPIENT, "--output", str(out),
                        str(out.with_suffix(".plain.yaml"))], check=True, capture_output=True)
    return _cached("secrets.yaml", f"{TEST_AGE_RECIPIENT}\n{plaintext}", make).decode()


def dependency_chart() -> bytes:
    """The stand-in jupyterhub chart, packaged by `helm package` (jupyterhub-4.1.0.tgz)."""
    def make(out: Path) -> None:
        src = out.parent / "src" / "jupyterhub"
        write_files(src, DEPENDENCY)
        subprocess.run([tool("helm"), "package", str(src), "--destination", str(out.parent)], check=True,
                       capture_output=True)
        (out.parent / f"jupyterhub-{CHART_VERSION}.tgz").rename(out)
    return _cached(f"jupyterhub-{CHART_VERSION}.tgz", repr(sorted(DEPENDENCY.items())), make)


def chart_lock(registry: str) -> str:
    """hub/Chart.lock as `helm dependency update` writes it (its digest is helm's hash of Chart.yaml's
    dependencies and the lock's, the same list here), so `helm dependency list` and `build` accept the vendored tgz."""
    dep = {"name": "jupyterhub", "version": CHART_VERSION, "repository": f"oci://{registry}/charts"}
    digest = hashlib.sha256(json.dumps([[dep], [dep]], separators=(",", ":")).encode()).hexdigest()
    return (f"dependencies:\n- name: jupyterhub\n  repository: {dep['repository']}\n  version: {CHART_VERSION}\n"
            f"digest: sha256:{digest}\ngenerated: \"2026-11-01T00:00:00Z\"\n")


def push_chart(registry: str) -> None:
    """Push the dependency chart to the OCI registry at `registry` (host:port, plain HTTP), as a chart
    repository the sample's Chart.yaml names: what an unvendored chart downloads."""
    with tempfile.TemporaryDirectory() as tmp:
        tgz = Path(tmp) / f"jupyterhub-{CHART_VERSION}.tgz"
        tgz.write_bytes(dependency_chart())
        subprocess.run([tool("helm"), "push", str(tgz), f"oci://{registry}/charts", "--plain-http"], check=True,
                       capture_output=True, env=dict(os.environ, HELM_CONFIG_HOME=tmp, HELM_CACHE_HOME=tmp))


def secrets_file(env: str) -> str:
    return encrypted("jupyterhub:\n  hub:\n    config:\n      GenericOAuthenticator:\n"
                     f"        client_secret: {SECRET_VALUE.format(env=env)}\n")


def sample_files(hubs: int = 4, registry: str = "127.0.0.1:5000") -> dict[str, str]:
    """Path -> content of the sample repository with `hubs` hubs (the four named ones first); the chart's
    dependency is not vendored here (`vendored_chart` is)."""
    files = {
        "hubflow-fleet.yaml": FLEET.replace("{registry}", registry),
        "README.md": "# datahub\nDeployments of the sample fleet.\n",
        "docs/index.md": "# Operator docs\n",
        **{f"hub/{rel}": text.replace("{registry}", registry) for rel, text in CHART.items()},
        "images/primary/Dockerfile": "FROM quay.io/jupyter/minimal-notebook:2025-01-06\nCOPY environment.yml /tmp/\n",
        "images/primary/environment.yml": ("name: primary\ndependencies:\n  - python=3.12\n  - numpy=2.1.3\n  - pip:\n"
                                           "    - otter-grader==6.0.0\n"),
        "images/primary/README.md": "The primary image.\n",
        "images/datascience/Dockerfile":
            "FROM quay.io/jupyter/scipy-notebook:2025-01-06\nCOPY requirements.txt /tmp/\n",
        "images/datascience/requirements.txt": "pandas==2.2.3\nscikit-learn==1.5.2\n",
    }
    secrets = {env: secrets_file(env) for env in ("staging", "prod")}
    names = (list(BASE_HUBS) + [f"hub{i:03d}" for i in range(max(0, hubs - len(BASE_HUBS)))])[:hubs]
    for n, name in enumerate(names):
        d = f"deployments/{name}"
        files[f"{d}/hubflow-hub.yaml"] = BASE_HUBS.get(name, f"images: [{('primary', 'datascience')[n % 2]}]\n")
        files[f"{d}/config/common.yaml"] = f"jupyterhub:\n  custom:\n    hub: {name}\n    layer: common\n"
        for env in ("staging", "prod"):
            # the secrets file comes later and replaces this placeholder: the ConfigMap shows which value won
            files[f"{d}/config/{env}.yaml"] = (
                f"jupyterhub:\n  custom:\n    layer: {env}\n  ingress:\n    hosts: [{name}-{env}.example.org]\n"
                f"  hub:\n    config:\n      GenericOAuthenticator:\n        client_secret: from-{env}-file\n")
            files[f"{d}/secrets/{env}.yaml"] = secrets[env]
        files[f"{d}/README.md"] = f"# {name}\n"
    return files


def vendored_chart(registry: str = "127.0.0.1:5000") -> dict[str, bytes]:
    """hub/charts/ and hub/Chart.lock as a deployment repository commits them after `helm dependency update`."""
    return {f"hub/charts/jupyterhub-{CHART_VERSION}.tgz": dependency_chart(),
            "hub/Chart.lock": chart_lock(registry).encode()}


def git(path: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="Sample", GIT_AUTHOR_EMAIL="sample@example.org",
               GIT_COMMITTER_NAME="Sample", GIT_COMMITTER_EMAIL="sample@example.org")
    return subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True, text=True, env=env).stdout


def write_files(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)


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

    With `bare`, also create a bare clone there (the `origin` that pods and the GitHub emulator use) and push both
    branches.
    """
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "staging")
    write_files(root, sample_files(hubs, registry) | vendored_chart(registry))
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
