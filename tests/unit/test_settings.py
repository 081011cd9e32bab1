"""The settings file: the shipped example loads, and every class of bad input is named by file, field and reason."""
import json
from pathlib import Path

import pytest

from hubflow.cli import json_schemas
from hubflow.core.documents import ConfigError
from hubflow.core.settings import (
    NAMESPACE_MAX,
    RELEASE_MAX,
    check_branch_name,
    fleet_name_problems,
    load_settings,
    namespace_problem,
    parse_settings,
    release_name_problem,
)

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


# ---------------------------------------------------------------- rendered names (issue 17, scenario 14)


@pytest.mark.parametrize("name,ok", [
    ("a", True), ("data8-staging", True), ("a.b-c.d", True), ("0", True), ("a" * 53, True),
    ("a" * 54, False), ("Data8", False), ("a_b", False), ("-a", False), ("a-", False), ("a..b", False),
    (".a", False), ("a.", False), ("", False), ("a b", False), ("data8\n", False), ("é", False),
])
def test_release_names_follow_helms_own_rule(name, ok):
    """helm 4, pkg/chart/v2/util/validate_name.go: ^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$
    and at most 53 characters."""
    assert (release_name_problem(name) is None) == ok
    if len(name) > RELEASE_MAX:
        assert "54 characters, more than helm's limit of 53" in release_name_problem(name)


@pytest.mark.parametrize("name,ok", [
    ("a", True), ("data8-staging", True), ("a" * 63, True),
    ("a" * 64, False), ("a.b", False), ("Hub", False), ("-a", False), ("a-", False), ("", False),
])
def test_namespaces_are_dns_1123_labels(name, ok):
    assert (namespace_problem(name) is None) == ok
    if len(name) > NAMESPACE_MAX:
        assert "64 characters, more than the limit of 63" in namespace_problem(name)


def with_envs(staging: str, prod: str) -> str:
    return f"""
repository: {{github: org/deploy, clone_url: https://github.com/org/deploy.git}}
environments:
  - {{name: staging, branch: staging, hub_url: x, {staging}}}
  - {{name: prod, branch: prod, hub_url: x, {prod}}}
"""


def test_a_pattern_no_hub_name_can_make_valid_is_refused_at_load_with_its_field():
    text = with_envs('release: "Hub_{hub}"', f'namespace: "{"n" * 63}{{hub}}"')
    with pytest.raises(ConfigError) as err:
        parse_settings(text, "s.yaml")
    found = problems(err.value)
    assert set(found) == {"environments[0].release", "environments[1].namespace"}
    assert "'Hub_a'" in found["environments[0].release"] and "not a name helm accepts" in found[
        "environments[0].release"]
    assert "64 characters, more than the limit of 63" in found["environments[1].namespace"]
    assert "no hub name can fix that" in found["environments[1].namespace"]


def test_two_environments_that_would_upgrade_each_others_releases_are_refused_at_load():
    same = 'release: "{hub}", namespace: "{hub}"'
    with pytest.raises(ConfigError) as err:
        parse_settings(with_envs(same, same), "s.yaml")
    (reason,) = problems(err.value).values()
    assert list(problems(err.value)) == ["environments[1].release"]
    assert "prod and environments[0] (staging) render the same helm release '{hub}' in namespace '{hub}'" in reason
    assert "kubernetes_default" in reason and "put {env} in the release or the namespace" in reason
    # a release is namespaced: the same name in another namespace, or on another cluster, is another release
    parse_settings(with_envs('release: "{hub}", namespace: "{hub}-{env}"', 'release: "{hub}"'))
    parse_settings(with_envs(same + ", kubernetes_conn_id: k8s_a", same + ", kubernetes_conn_id: k8s_b"))


def test_rendered_names_are_checked_against_the_hubs_naming_hub_name_and_limit():
    s = parse_settings(with_envs('release: "jupyterhub-{hub}-{env}"', 'namespace: "{hub}"'))
    long = "h" * 40
    found = fleet_name_problems(s.environments, ["data8", long])
    assert [i for i, _ in found] == [1]
    (reason,) = [r for _, r in found]
    assert f"hub '{long}' (40 characters): its staging release 'jupyterhub-{long}-staging' is 59 characters, " \
           "more than helm's limit of 53 for a release name (environments[0].release is " \
           "'jupyterhub-{hub}-{env}')" == reason
    assert fleet_name_problems(s.environments, ["data8", "h" * 30]) == []


def test_two_hubs_that_render_the_same_release_on_one_cluster_are_refused():
    # staging's names carry a suffix, prod's do not, on one cluster: prod's hub `x-staging` is staging's `x`
    s = parse_settings(with_envs('release: "{hub}-staging", namespace: "{hub}-staging"',
                                 'release: "{hub}", namespace: "{hub}"'))
    found = fleet_name_problems(s.environments, ["x", "y", "x-staging"])
    assert [i for i, _ in found] == [2]
    assert ("hub 'x-staging' in prod and hub 'x' in staging render the same helm release 'x-staging' in namespace "
            "'x-staging' on the same cluster (kubernetes_default)") in found[0][1]
    other = parse_settings(with_envs('release: "{hub}-staging", namespace: "{hub}-staging"',
                                     'release: "{hub}", namespace: "{hub}", kubernetes_conn_id: k8s_prod'))
    assert fleet_name_problems(other.environments, ["x", "y", "x-staging"]) == []
    # one environment whose names do not depend on the hub: every hub after the first collides with it
    single = parse_settings(with_envs('release: "jupyterhub", namespace: "{env}"', ""))
    assert [i for i, _ in fleet_name_problems(single.environments, ["a", "b", "c"])] == [1, 2]
