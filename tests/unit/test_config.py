"""Both configuration files: the shipped examples load, and every class of bad input is named by file, field and reason."""
import json
from pathlib import Path

import pytest

from hubflow.core import config
from sandbox.sample_repo import sample_files

FLEET = sample_files()["hubflow-fleet.yaml"]

ROOT = Path(__file__).resolve().parents[2]

SETTINGS = """
repository: {github: org/deploy, clone_url: https://github.com/org/deploy.git}
environments:
  - {name: staging, branch: staging, hub_url: "https://{hub}.staging.example.org"}
  - {name: prod, branch: prod, hub_url: "https://{hub}.example.org", build_images: false}
"""


def problems(exc: config.ConfigError) -> dict[str, str]:
    return {path: reason for _, path, reason in exc.problems}


def test_shipped_settings_load():
    s = config.load_settings(ROOT / "include" / "hubflow.yaml")
    assert [e.name for e in s.environments] == ["staging", "prod"]
    assert s.environment("prod").build_images is False
    assert s.next_environment("staging").name == "prod"
    assert s.next_environment("prod") is None
    assert s.environment("staging").namespace_for("data8") == "data8-staging"


def test_hubflow_config_env_selects_file(tmp_path, monkeypatch):
    f = tmp_path / "other.yaml"
    f.write_text(SETTINGS)
    monkeypatch.setenv("HUBFLOW_CONFIG", str(f))
    assert config.load_settings().repository.github == "org/deploy"


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
    with pytest.raises(config.ConfigError) as err:
        config.parse_settings(bad, "bad.yaml")
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
    with pytest.raises(config.ConfigError) as err:
        config.parse_settings(dup)
    found = problems(err.value)
    assert "duplicate name 'staging'" in found["environments[2].name"]
    assert "duplicate branch 'staging'" in found["environments[2].branch"]


@pytest.mark.parametrize("text,reason", [
    ("repository: [1, 2", "not valid YAML"),
    ("- a\n- b\n", "expected a mapping"),
])
def test_malformed_settings(text, reason):
    with pytest.raises(config.ConfigError) as err:
        config.parse_settings(text, "s.yaml")
    assert reason in str(err.value)


@pytest.mark.parametrize("name", ["feature/ok", "release-1.2", "user/x_y"])
def test_good_branch_names(name):
    assert config.check_branch_name(name) == name


@pytest.mark.parametrize("name", ["", "a b", "a..b", "a.lock", "/a", "a/", "-a", "a~1", "a^", "a:b", "a?", "a*", "a[",
                                  "a\\b", "a@{1}", "a//b", "a.", "$(rm -rf /)", "a\nb"])
def test_bad_branch_names(name):
    with pytest.raises(ValueError):
        config.check_branch_name(name)


def discovered(files: dict[str, str]) -> dict[str, str]:
    return {p: t for p, t in files.items() if p.endswith("hubflow-hub.yaml")}


def test_sample_fleet_parses_with_discovery_and_defaults():
    fleet = config.parse_fleet(FLEET, "fleet.yaml", discovered(sample_files()), ["staging", "prod"])
    hubs = {h.name: h for h in fleet.hubs}
    assert set(hubs) == {"datahub", "data8", "biology", "rhub"}
    assert hubs["datahub"].values_files("staging") == [
        "deployments/datahub/config/common.yaml", "deployments/datahub/config/staging.yaml",
        "deployments/datahub/secrets/staging.yaml"]
    assert hubs["datahub"].images[0].values_path == "jupyterhub.singleuser.image"
    assert hubs["rhub"].external_image.startswith("docker.io/rocker")
    assert hubs["datahub"].smoke.packages == ["requests"]


def test_fleet_reference_and_duplicate_errors():
    fleet = """
chart: hub
redeploy_all: ["hub/[abc"]
images:
  - {name: primary, paths: [images/primary], repository: r/p}
  - {name: primary, paths: ["../outside"], repository: r/p}
hubs:
  - {name: a, folder: deployments/a, images: [primary, ghost]}
  - {name: a, folder: deployments/a, external_image: x, images: [primary]}
  - {name: BadName, folder: deployments/c}
  - {name: d, folder: deployments/d, images: [primary], values: {qa: [x.yaml]}, colour: red}
"""
    with pytest.raises(config.ConfigError) as err:
        config.parse_fleet(fleet, "fleet.yaml", None, ["staging", "prod"])
    found = problems(err.value)
    # pydantic-level problems are reported together first
    assert "unbalanced" in found["redeploy_all"]
    assert "not a path inside the repository" in found["images[1].paths"]
    assert "hubs[2].name" in found
    assert found["hubs[3].colour"] == "unknown key"


def test_fleet_semantic_errors_all_at_once():
    fleet = """
chart: hub
images:
  - {name: primary, paths: [images/primary], repository: r/p}
  - {name: primary, paths: [images/other], repository: r/p}
hubs:
  - {name: a, folder: deployments/a, images: [primary, ghost]}
  - {name: a, folder: deployments/a, external_image: x, images: [primary]}
  - {name: c, folder: deployments/c}
  - {name: d, folder: deployments/d, images: [primary], values: {qa: [x.yaml]}}
"""
    with pytest.raises(config.ConfigError) as err:
        config.parse_fleet(fleet, "fleet.yaml", None, ["staging", "prod"])
    found = problems(err.value)
    assert "duplicate name 'primary'" in found["images[1].name"]
    assert "unknown image 'ghost'" in found["hubs[0].images[1].name"]
    assert "duplicate name 'a'" in found["hubs[1].name"]
    assert "also used by hubs[0]" in found["hubs[1].folder"]
    assert "exclude each other" in found["hubs[1]"]
    assert "needs `images` or `external_image`" in found["hubs[2]"]
    assert "unknown environment" in found["hubs[3].values.qa"]


def test_discovered_hub_errors_name_their_own_file():
    files = {"deployments/x/hubflow-hub.yaml": "images: [nope]\ncolor: 1\n",
             "deployments/y/hubflow-hub.yaml": "name: y\n",
             "deployments/z/hubflow-hub.yaml": "images: [primary\n"}
    with pytest.raises(config.ConfigError) as err:
        config.parse_fleet(FLEET, "fleet.yaml", files)
    by_file = {(f, p): r for f, p, r in err.value.problems}
    assert by_file[("deployments/x/hubflow-hub.yaml", "color")] == "unknown key"
    assert "come from the folder" in by_file[("deployments/y/hubflow-hub.yaml", "")]
    assert "not valid YAML" in by_file[("deployments/z/hubflow-hub.yaml", "line 2, column 1")]


@pytest.mark.parametrize("path,pattern,hit", [
    ("docs/a/b.md", "docs/**", True),
    ("docs", "docs", True),
    ("docs/x", "docs", True),
    ("docsx/y", "docs", False),
    ("a/b/README.md", "**/*.md", True),
    ("README.md", "**/*.md", True),
    ("a/b.md", "*.md", False),
    ("hub/templates/x.yaml", "hub/*", False),
    ("hub/values.yaml", "hub/*", True),
    ("images/primary/environment.yml", "images/primary", True),
    # gitwildmatch, read from the repository root
    ("deployments/a/config/x.yaml", "deployments/*/config", True),
    ("deployments/a/b/config/x.yaml", "deployments/*/config", False),
    ("deployments/a/b/config/x.yaml", "deployments/**/config", True),
    ("a/x.md/b.md", "**/*.md", True),
    ("hub/a", "hub/[ab]", True),
    ("hub/c", "hub/[!ab]", True),
    ("hub/a", "hub/?", True),
    ("hub/ab", "hub/?", False),
    ("x/docs/a.md", "docs", False),
    ("!important", "!important", True),
    ("#notes", "#notes", True),
])
def test_glob_match(path, pattern, hit):
    assert config.glob_match(path, pattern) is hit


BAD_PATTERNS = [("a]b[", "unbalanced brackets"), ("hub/[", "unbalanced brackets"), ("/etc/*", "absolute"),
                ("../x/**", "`..` part"), ("a/./b", "`.` or `..` part"), ("a//b", "empty"), ("a\\b*", "backslash"),
                ("", "empty")]


@pytest.mark.parametrize("pattern,reason", BAD_PATTERNS)
def test_bad_patterns_fail_at_load_with_the_field(pattern, reason):
    fleet = f"""
chart: hub
redeploy_all: [hub/**, {json.dumps(pattern)}]
deploy_nothing: [{json.dumps(pattern)}]
hub_discovery: [{{pattern: "deployments/*/hubflow-hub.yaml"}}, {{pattern: {json.dumps(pattern)}}}]
"""
    with pytest.raises(config.ConfigError) as err:
        config.parse_fleet(fleet, "fleet.yaml")
    found = problems(err.value)
    for field in ("redeploy_all", "deploy_nothing", "hub_discovery[1].pattern"):
        assert reason in found[field] and repr(pattern) in found[field], found


@pytest.mark.parametrize("field", ["context", "dockerfile"])
@pytest.mark.parametrize("path", ["/var/run/secrets/registry", "../../secrets", "images/primary/../../..",
                                  "images\\..\\..\\x", "..\\x", "./images", "images/*", "\\\\host\\share", " "])
def test_image_context_and_dockerfile_stay_in_the_repository(field, path):
    fleet = f"""
chart: hub
images:
  - {{name: primary, paths: [images/primary], repository: r/p, {field}: {json.dumps(path)}}}
"""
    with pytest.raises(config.ConfigError) as err:
        config.parse_fleet(fleet, "fleet.yaml")
    assert "not a path inside the repository" in problems(err.value)[f"images[0].{field}"]


def test_dockerfile_is_read_inside_its_context():
    fleet = config.parse_fleet("""
chart: hub
images:
  - {name: a, paths: [images/a], repository: r/a}
  - {name: b, paths: [images/b, shared], repository: r/b, context: images, dockerfile: b/Dockerfile.gpu}
""")
    assert [i.dockerfile_path for i in fleet.images] == ["images/a/Dockerfile", "images/b/Dockerfile.gpu"]


def test_values_files_and_notebooks_are_repository_paths():
    fleet = """
chart: hub
hubs:
  - {name: a, folder: deployments/a, external_image: x, values: {common: [../../etc/x.yaml]},
     smoke: {notebook: /etc/passwd}}
"""
    with pytest.raises(config.ConfigError) as err:
        config.parse_fleet(fleet, "fleet.yaml")
    found = problems(err.value)
    assert "not a path inside the repository" in found["hubs[0].values.common[0]"]
    assert "not a path inside the repository" in found["hubs[0].smoke.notebook"]


def test_committed_schemas_match_the_models():
    for name, schema in config.json_schemas().items():
        committed = json.loads((ROOT / "include" / "schemas" / name).read_text())
        assert committed == schema, f"include/schemas/{name} is stale: run `make schema`"
