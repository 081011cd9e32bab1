"""The settings file: the shipped example loads, and every class of bad input is named by file, field and reason."""
import json
from pathlib import Path

import pytest

from hubflow.cli import json_schemas
from hubflow.core.documents import ConfigError
from hubflow.core.settings import check_branch_name, load_settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]

SETTINGS = """
repository: {github: org/deploy, clone_url: https://github.com/org/deploy.git}
environments:
  - {name: staging, branch: staging, hub_url: "https://{hub}.staging.example.org"}
  - {name: prod, branch: prod, hub_url: "https://{hub}.example.org", build_images: false}
"""


def problems(exc: ConfigError) -> dict[str, str]:
    return {path: reason for _, path, reason in exc.problems}


def test_shipped_settings_load():
    s = load_settings(ROOT / "include" / "hubflow.yaml")
    assert [e.name for e in s.environments] == ["staging", "prod"]
    assert s.environment("prod").build_images is False
    assert s.next_environment("staging").name == "prod"
    assert s.next_environment("prod") is None
    assert s.environment("staging").namespace_for("data8") == "data8-staging"


def test_hubflow_config_env_selects_file(tmp_path, monkeypatch):
    f = tmp_path / "other.yaml"
    f.write_text(SETTINGS)
    monkeypatch.setenv("HUBFLOW_CONFIG", str(f))
    assert load_settings().repository.github == "org/deploy"


def test_settings_errors_are_all_reported_with_paths():
    bad = """
repository: {github: "not a repo", clone_url: "https://x:ghp_secret@github.com/o/r.git", colour: blue}
environments:
  - {name: staging, branch: "bad..branch", hub_url: "https://{hub}.{cluster}.org"}
  - {name: staging, branch: "prod", hub_url: "https://x"}
  - {name: Prod!, branch: prod, hub_url: x}
timeouts: {helm_seconds: -1}
promotion: {mode: yolo}
"""
    with pytest.raises(ConfigError) as err:
        parse_settings(bad, "bad.yaml")
    found = problems(err.value)
    assert found["repository.colour"] == "unknown key"
    assert "owner/name" in found["repository.github"]
    assert "must not contain credentials" in found["repository.clone_url"]
    assert "ghp_secret" not in str(err.value)
    assert "not a valid git branch name" in found["environments[0].branch"]
    assert "cluster" in found["environments[0].hub_url"]
    assert "environments[2].name" in found
    assert "timeouts.helm_seconds" in found
    assert "promotion.mode" in found
    assert all(f == "bad.yaml" for f, _, _ in err.value.problems)


def test_duplicate_environments_named():
    dup = SETTINGS + "  - {name: staging, branch: staging, hub_url: x}\n"
    with pytest.raises(ConfigError) as err:
        parse_settings(dup)
    found = problems(err.value)
    assert "duplicate name 'staging'" in found["environments[2].name"]
    assert "duplicate branch 'staging'" in found["environments[2].branch"]


@pytest.mark.parametrize("text,reason", [
    ("repository: [1, 2", "not valid YAML"),
    ("- a\n- b\n", "expected a mapping"),
])
def test_malformed_settings(text, reason):
    with pytest.raises(ConfigError) as err:
        parse_settings(text, "s.yaml")
    assert reason in str(err.value)


@pytest.mark.parametrize("name", ["feature/ok", "release-1.2", "user/x_y"])
def test_good_branch_names(name):
    assert check_branch_name(name) == name


@pytest.mark.parametrize("name", ["", "a b", "a..b", "a.lock", "/a", "a/", "-a", "a~1", "a^", "a:b", "a?", "a*", "a[",
                                  "a\\b", "a@{1}", "a//b", "a.", "$(rm -rf /)", "a\nb"])
def test_bad_branch_names(name):
    with pytest.raises(ValueError):
        check_branch_name(name)


def test_committed_schemas_match_the_models():
    for name, schema in json_schemas().items():
        committed = json.loads((ROOT / "include" / "schemas" / name).read_text())
        assert committed == schema, f"include/schemas/{name} is stale: run `make schema`"
