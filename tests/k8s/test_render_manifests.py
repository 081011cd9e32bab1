"""`hubflow render --manifests` and the plan's vendoring warning, as a person runs them (a real process, real helm
4 on PATH, the sample repository's real chart)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.registry_server import free_port
from sandbox.sample_repo import SECRET_VALUE, commit, git, make_sample_repo, sample_files, tool, write_files

HUBFLOW = Path(sys.executable).parent / "hubflow"
ENV = dict(os.environ, PATH=f"{Path(tool('helm')).parent}:{os.environ['PATH']}")


def hubflow(settings_file, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(HUBFLOW), *args, "--config", str(settings_file)], capture_output=True, text=True,
                          env=ENV, timeout=120)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The sample at `base`, then one commit: datahub's staging values change, image primary changes, a new hub."""
    root = make_sample_repo(tmp_path_factory.mktemp("manifests") / "deploy")
    base = git(root, "rev-parse", "HEAD").strip()
    staging = (root / "deployments/datahub/config/staging.yaml").read_text()
    commit(root, "tune datahub, bump primary, add physics", {
        "deployments/datahub/config/staging.yaml": staging.replace("layer: staging", "layer: tuned"),
        "images/primary/environment.yml": "dependencies: [scipy]\n",
        **{f"deployments/physics/{rel}": text for rel, text in (
            ("hubflow-hub.yaml", "images: [datascience]\n"), ("config/common.yaml", "jupyterhub: {}\n"),
            ("config/staging.yaml", "{}\n"), ("config/prod.yaml", "{}\n"),
            ("secrets/staging.yaml", "{}\n"), ("secrets/prod.yaml", "{}\n"))}})
    return root, base


def sections(out: str) -> dict[str, str]:
    """Each hub's part of the output, by hub name."""
    parts = re.split(r"^# hub (\S+): upgrade of release", out, flags=re.M)[1:]
    return dict(zip(parts[::2], parts[1::2]))


def test_manifests_of_a_first_deploy_are_helm_templates_without_the_encrypted_values(settings_file, repo):
    root, base = repo
    out = hubflow(settings_file, "render", "--env", "staging", "--head", base, "--repo", str(root), "--manifests")
    assert out.returncode == 0, out.stderr
    hubs = sections(out.stdout)
    assert sorted(hubs) == ["biology", "data8", "datahub", "rhub"]
    datahub = hubs["datahub"]
    assert datahub.startswith(" datahub-staging in namespace datahub-staging (staging) to ")
    assert ("# values deployments/datahub/config/common.yaml, deployments/datahub/config/staging.yaml; left out "
            "(encrypted by sops): deployments/datahub/secrets/staging.yaml\n") in datahub
    for line in ('kind: Deployment\nmetadata:\n  name: datahub-staging\n', '  hub: "datahub"\n  layer: "staging"\n',
                 '  client_secret: "from-staging-file"\n',  # the placeholder: the secrets file is not read
                 "# Source: hub/charts/jupyterhub/templates/singleuser.yaml\n"):
        assert line in datahub
    assert re.search(r'image: "127\.0\.0\.1:5000/datahub/primary:[0-9a-f]{12}"', datahub)
    assert SECRET_VALUE.format(env="staging") not in out.stdout and "diff" not in out.stdout and not out.stderr


def test_manifests_with_a_base_end_with_their_diff(settings_file, repo):
    root, base = repo
    out = hubflow(settings_file, "render", "--env", "staging", "--head", "staging", "--base", base,
                  "--repo", str(root), "--manifests")
    assert out.returncode == 0, out.stderr
    hubs = sections(out.stdout)
    assert sorted(hubs) == ["data8", "datahub", "physics"]  # what the plan deploys: biology and rhub are unchanged
    head = git(root, "rev-parse", "staging").strip()
    diff = hubs["datahub"].split(f"# diff of hub datahub's manifests from {base[:12]} to {head[:12]}:\n")[1]
    assert diff.startswith(f"--- datahub@{base[:12]}\n+++ datahub@{head[:12]}\n")
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("---", "+++")]
    assert '-  layer: "staging"' in changed and '+  layer: "tuned"' in changed
    images = [line for line in changed if "datahub/primary:" in line]
    assert [line[0] for line in images] == ["-", "+", "-", "+"]  # the singleuser ConfigMap and the annotation
    assert all("checksum/values" in line for line in changed if line not in images and "layer" not in line)
    data8 = [line for line in hubs["data8"].splitlines() if line[:1] in "+-" and line[:3] not in ("---", "+++")]
    assert len(data8) == 4 and all("datahub/primary:" in line for line in data8)
    assert f"# hub physics is not in the fleet at {base[:12]}: all of it is new\n" in hubs["physics"]


def test_an_unvendored_chart_is_named_by_the_plan_and_render_tries_to_fetch_it(settings_file, repo, tmp_path):
    out = hubflow(settings_file, "plan", "--head", "staging", "--repo", str(repo[0]))
    assert out.returncode == 0 and "datahub" in out.stdout and "warning" not in out.stdout  # the sample vendors
    root = tmp_path / "unvendored"
    closed = f"127.0.0.1:{free_port()}"
    write_files(root, sample_files(registry=closed))
    git(root, "init", "-q", "-b", "staging")
    commit(root, "fleet without vendored dependencies")
    out = hubflow(settings_file, "plan", "--head", "staging", "--repo", str(root))
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("\nwarning: chart hub does not vendor jupyterhub-4.1.0: every upgrade pod downloads "
                               "it; run `helm dependency update hub` and commit hub/Chart.lock and hub/charts/\n")
    out = hubflow(settings_file, "render", "--env", "staging", "--head", "staging", "--repo", str(root),
                  "--manifests")
    assert out.returncode == 2
    assert "warning: chart hub does not vendor its dependencies at " in out.stderr
    assert "error: helm dependency build failed: " in out.stderr and closed in out.stderr
