"""The `hubflow` command end to end, as an operator or a deployment repository's CI runs it (a real process)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.sample_repo import commit, git, make_sample_repo, sample_files

ROOT = Path(__file__).resolve().parents[2]
HUBFLOW = Path(sys.executable).parent / "hubflow"


def run(*args, env=None, cwd=None):
    return subprocess.run([str(HUBFLOW), *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ, **(env or {})), timeout=60)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = make_sample_repo(tmp_path_factory.mktemp("cli") / "deploy")
    base = git(root, "rev-parse", "HEAD").strip()
    commit(root, "add scipy to primary", {"images/primary/environment.yml": "dependencies: [scipy]\n"})
    return root, base


def test_validate_accepts_the_examples(sample):
    root, _ = sample
    out = run("validate", "--repo", str(root), "--revision", "staging")
    assert out.returncode == 0, out.stderr
    assert "fleet" in out.stdout and "4 hubs" in out.stdout
    assert "image primary" in out.stdout and "used by 2: data8, datahub" in out.stdout
    out = run("validate", "--fleet", str(root / "hubflow-fleet.yaml"))
    assert out.returncode == 0, out.stderr
    assert "2 images, 4 hubs" in out.stdout


def test_validate_rejects_broken_files_naming_every_field(tmp_path):
    settings = tmp_path / "s.yaml"
    settings.write_text((ROOT / "include" / "hubflow.yaml").read_text()
                        .replace("branch: prod", "branch: 'prod..x'")
                        .replace("mode: pull_request", "mode: sometimes", 1))
    files = sample_files()
    files["hubflow-fleet.yaml"] = files["hubflow-fleet.yaml"].replace("paths: [images/primary]", "paths: [/abs]")
    files["deployments/data8/hubflow-hub.yaml"] = "images: [nosuch]\n"
    for rel, text in files.items():
        (tmp_path / "repo" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "repo" / rel).write_text(text)
    out = run("validate", "--config", str(settings))
    assert out.returncode == 1
    assert "environments[1].branch: 'prod..x' is not a valid git branch name" in out.stderr
    assert "promotion.mode" in out.stderr
    assert "Traceback" not in out.stderr
    out = run("validate", "--fleet", str(tmp_path / "repo" / "hubflow-fleet.yaml"))
    assert out.returncode == 1
    assert "images[0].paths: '/abs' is not a path inside the repository" in out.stderr


def test_validate_names_unknown_fleet_references(tmp_path):
    files = sample_files()
    files["deployments/data8/hubflow-hub.yaml"] = "images: [nosuch]\n"
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    out = run("validate", "--fleet", str(tmp_path / "hubflow-fleet.yaml"))
    assert out.returncode == 1
    assert "unknown image 'nosuch'" in out.stderr and "data8" in out.stderr


def test_plan_json(sample):
    root, base = sample
    out = run("plan", "--repo", str(root), "--base", base, "--head", "staging", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["base"] == base and len(plan["head"]) == 40
    assert [(i["name"], i["changed"], i["reason"]) for i in plan["images"]] == [
        ("primary", True, "images/primary/environment.yml changed")]
    assert {h["name"]: h["reason"] for h in plan["hubs"]} == {"data8": "image primary changed",
                                                               "datahub": "image primary changed"}
    assert plan["removed_hubs"] == []
    assert set(plan["images"][0]) >= {"name", "tag", "changed", "reason"}


def test_plan_table_and_first_deploy(sample):
    root, _ = sample
    out = run("plan", "--head", "staging", cwd=root)
    assert out.returncode == 0, out.stderr
    assert "(first deploy)" in out.stdout and "rhub" in out.stdout and "build" in out.stdout


@pytest.mark.parametrize("args,message", [
    (["--base", "v0-nope", "--head", "staging"], "unknown revision 'v0-nope'"),
    (["--head", "staging", "--repo", "/nonexistent/x"], "no such directory"),
    (["--head", "staging", "--repo", "/tmp"], "is not a git repository"),
])
def test_plan_bad_input_is_a_clear_error(sample, args, message):
    root, _ = sample
    full = ["plan", "--repo", str(root), *args] if "--repo" not in args else ["plan", *args]
    out = run(*full)
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_plan_base_not_ancestor(sample, tmp_path):
    root, base = sample
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
    git(clone, "checkout", "-q", "-b", "side", base)
    side = commit(clone, "side", {"x.txt": "1"})
    out = run("plan", "--repo", str(clone), "--base", "origin/staging", "--head", side)
    assert out.returncode == 2 and "is not an ancestor" in out.stderr


def test_missing_settings_file(tmp_path):
    out = run("validate", "--config", str(tmp_path / "none.yaml"))
    assert out.returncode == 1 and "cannot read" in out.stderr
