"""`hubflow render`: the pods a deploy would create, as multi-document YAML, with no cluster and no credentials."""
from __future__ import annotations

import json
import re

import pytest
import yaml
from kubernetes.client import ApiClient

from hubflow.cli import main
from sandbox.sample_repo import commit, git, make_sample_repo

DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class _Response:
    def __init__(self, doc):
        self.data = json.dumps(doc)


def render(capsys, *args):
    code = main(["render", *args])
    out, err = capsys.readouterr()
    return code, out, err


def pods_of(out):
    docs = list(yaml.safe_load_all(out))
    for doc in docs:
        assert doc["apiVersion"] == "v1" and doc["kind"] == "Pod"
        assert DNS1123.fullmatch(doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 63
        pod = ApiClient().deserialize(_Response(doc), "V1Pod")  # the client's own model accepts it
        assert pod.spec.containers[0].name == "base"
    return docs


def test_render_with_the_example_config_prints_valid_pod_manifests(capsys, sample):
    """include/hubflow.yaml (the example settings) against the sample deployment repository."""
    code, out, _ = render(capsys, "--env", "staging", "--head", "staging", "--repo", str(sample))
    assert code == 0
    docs = pods_of(out)
    kinds = [d["metadata"]["labels"]["hubflow.io/kind"] for d in docs]
    assert kinds == ["build", "build", "upgrade", "upgrade", "upgrade", "upgrade"]
    assert "# build image primary as 127.0.0.1:5000/datahub/primary:" in out
    assert "# upgrade hub datahub in staging: first deploy" in out
    upgrade = next(d for d in docs if d["metadata"]["name"] == "upgrade-datahub-staging")
    assert upgrade["spec"]["serviceAccountName"] == "hubflow-deployer"
    assert upgrade["spec"]["containers"][0]["command"] == ["hubflow-runner"]
    assert [c["name"] for c in upgrade["spec"]["containers"]] == ["base"]  # the operator adds its XCom sidecar


def test_render_of_a_range_builds_only_what_changed_with_the_previous_tag_as_cache(capsys, tmp_path, settings_file):
    repo = make_sample_repo(tmp_path / "repo")
    base = git(repo, "rev-parse", "HEAD").strip()
    head = commit(repo, "numpy 2.2", {"images/primary/environment.yml": "dependencies:\n  - numpy=2.2.0\n"})
    code, out, _ = render(capsys, "--env", "staging", "--base", base, "--head", head, "--repo", str(repo),
                          "--config", str(settings_file))
    assert code == 0
    docs = pods_of(out)
    builds = [d for d in docs if d["metadata"]["labels"]["hubflow.io/kind"] == "build"]
    hubs = sorted(d["metadata"]["labels"].get("hubflow.io/hub") for d in docs if d not in builds)
    assert [b["metadata"]["labels"]["hubflow.io/image"] for b in builds] == ["primary"]
    assert hubs == ["data8", "datahub"]
    args = builds[0]["spec"]["containers"][0]["args"]
    old_tag = next(a for a in args if a.startswith("type=registry,ref="))
    new_tag = builds[0]["metadata"]["labels"]["hubflow.io/tag"]
    assert old_tag.startswith("type=registry,ref=127.0.0.1:5000/datahub/primary:") and not old_tag.endswith(new_tag)


def test_render_for_prod_has_no_builds(capsys, sample, settings_file):
    code, out, _ = render(capsys, "--env", "prod", "--head", "prod", "--repo", str(sample), "--config",
                          str(settings_file))
    assert code == 0
    assert {d["metadata"]["labels"]["hubflow.io/kind"] for d in pods_of(out)} == {"upgrade"}


def test_render_of_an_empty_range_says_so(capsys, sample):
    code, out, _ = render(capsys, "--env", "staging", "--base", "staging", "--head", "staging", "--repo", str(sample))
    assert (code, out.strip()) == (0, "# nothing to deploy in this range")


@pytest.mark.parametrize("args,message", [
    (["--env", "qa", "--head", "staging"], "unknown environment 'qa'"),
    (["--env", "staging", "--head", "no-such-branch"], "unknown revision 'no-such-branch'"),
])
def test_render_errors_name_the_problem(capsys, sample, args, message):
    code, out, err = render(capsys, *args, "--repo", str(sample))
    assert code == 2 and message in err and out == ""
