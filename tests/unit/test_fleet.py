"""The fleet file, its repository paths and patterns: the sample fleet loads, and every class of bad input is named by
file, field and reason."""
import json

import pytest

from hubflow.core.documents import ConfigError
from hubflow.core.fleet import parse_fleet
from hubflow.core.paths import glob_match
from sandbox.sample_repo import sample_files

FLEET = sample_files()["hubflow-fleet.yaml"]


def problems(exc: ConfigError) -> dict[str, str]:
    return {path: reason for _, path, reason in exc.problems}


def discovered(files: dict[str, str]) -> dict[str, str]:
    return {p: t for p, t in files.items() if p.endswith("hubflow-hub.yaml")}


def test_sample_fleet_parses_with_discovery_and_defaults():
    fleet = parse_fleet(FLEET, "fleet.yaml", discovered(sample_files()), ["staging", "prod"])
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
    with pytest.raises(ConfigError) as err:
        parse_fleet(fleet, "fleet.yaml", None, ["staging", "prod"])
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
    with pytest.raises(ConfigError) as err:
        parse_fleet(fleet, "fleet.yaml", None, ["staging", "prod"])
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
    with pytest.raises(ConfigError) as err:
        parse_fleet(FLEET, "fleet.yaml", files)
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
    assert glob_match(path, pattern) is hit


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
    with pytest.raises(ConfigError) as err:
        parse_fleet(fleet, "fleet.yaml")
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
    with pytest.raises(ConfigError) as err:
        parse_fleet(fleet, "fleet.yaml")
    assert "not a path inside the repository" in problems(err.value)[f"images[0].{field}"]


def test_dockerfile_is_read_inside_its_context():
    fleet = parse_fleet("""
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
    with pytest.raises(ConfigError) as err:
        parse_fleet(fleet, "fleet.yaml")
    found = problems(err.value)
    assert "not a path inside the repository" in found["hubs[0].values.common[0]"]
    assert "not a path inside the repository" in found["hubs[0].smoke.notebook"]



# ---------------------------------------------------------------- rendered names (issue 17, scenario 14)

LONG = "a-hub-name-of-forty-characters-for-maths"  # the longest hub name the fleet allows
SETTINGS = """
repository: {github: org/deploy, clone_url: https://github.com/org/deploy.git}
environments:
  - {name: staging, branch: staging, hub_url: x, release: "jupyterhub-{hub}-{env}"}
  - {name: prod, branch: prod, hub_url: x, release: "jupyterhub-{hub}-{env}"}
"""


def test_a_hub_whose_release_helm_would_refuse_is_named_with_hub_rendered_name_and_limit():
    from hubflow.core.settings import parse_settings

    envs = parse_settings(SETTINGS).environments
    assert len(LONG) == 40
    files = discovered(sample_files()) | {f"deployments/{LONG}/hubflow-hub.yaml": "images: [datascience]\n"}
    with pytest.raises(ConfigError) as err:
        parse_fleet(FLEET, "fleet.yaml", files, envs)
    # a discovered hub is named by its folder: its problems are its own file's, at the top level; one for each
    # environment ('jupyterhub-<40>-prod' is 56 characters, too many as well)
    assert [(f, p) for f, p, _ in err.value.problems] == [(f"deployments/{LONG}/hubflow-hub.yaml", "")] * 2
    text = str(err.value)
    assert f"hub '{LONG}' (40 characters): its staging release 'jupyterhub-{LONG}-staging' is 59 characters, " \
           "more than helm's limit of 53 for a release name (environments[0].release is " \
           "'jupyterhub-{hub}-{env}')" in text
    assert f"its prod release 'jupyterhub-{LONG}-prod' is 56 characters" in text
    # by name only (the nightly, the fleet at the base of a range, what runs now): the names are not checked
    assert parse_fleet(FLEET, "fleet.yaml", files, ["staging", "prod"]).hub(LONG)
    # the sample's own hubs fit
    assert parse_fleet(FLEET, "fleet.yaml", discovered(sample_files()), envs)


def test_a_listed_hub_is_named_by_its_field_path():
    from hubflow.core.settings import parse_settings

    envs = parse_settings(SETTINGS).environments
    fleet = f"""
chart: hub
hubs:
  - {{name: data8, folder: deployments/data8, external_image: x}}
  - {{name: {LONG}, folder: deployments/maths, external_image: x}}
"""
    with pytest.raises(ConfigError) as err:
        parse_fleet(fleet, "fleet.yaml", None, envs)
    assert {(f, p) for f, p, _ in err.value.problems} == {("fleet.yaml", "hubs[1].name")}
    assert len(err.value.problems) == 2  # staging and prod


def test_two_hubs_in_the_same_place_on_one_cluster_are_refused_at_the_second():
    from hubflow.core.settings import parse_settings

    # staging's names carry a suffix and prod's do not, on one cluster: prod's `x-staging` would be staging's `x`
    envs = parse_settings("""
repository: {github: org/deploy, clone_url: https://github.com/org/deploy.git}
environments:
  - {name: staging, branch: staging, hub_url: x, release: "{hub}-staging", namespace: "{hub}-staging"}
  - {name: prod, branch: prod, hub_url: x, release: "{hub}", namespace: "{hub}"}
""").environments
    fleet = """
chart: hub
hubs:
  - {name: x, folder: deployments/x, external_image: x}
  - {name: x, folder: deployments/x2, external_image: x}
  - {name: x-staging, folder: deployments/x-staging, external_image: x}
"""
    with pytest.raises(ConfigError) as err:
        parse_fleet(fleet, "fleet.yaml", None, envs)
    found = problems(err.value)
    assert set(found) == {"hubs[1].name", "hubs[2].name"}
    assert "duplicate name 'x'" in found["hubs[1].name"]  # said once, not again as a collision
    assert found["hubs[2].name"] == (
        "hub 'x-staging' in prod and hub 'x' in staging render the same helm release 'x-staging' in namespace "
        "'x-staging' on the same cluster (kubernetes_default): each would upgrade the other's release; rename one")
    assert parse_fleet(fleet.replace("{name: x, folder: deployments/x2", "{name: y, folder: deployments/y")
                       .replace("x-staging", "z"), "fleet.yaml", None, envs)


def test_hubflow_validate_checks_the_names_against_the_settings(tmp_path, capsys):
    from pathlib import Path

    from hubflow.cli import main

    root = Path(__file__).resolve().parents[2]
    settings = tmp_path / "s.yaml"
    settings.write_text((root / "include" / "hubflow.yaml").read_text()
                        .replace('release: "{hub}-staging"', 'release: "jupyterhub-{hub}-staging"'))
    files = sample_files() | {f"deployments/{LONG}/hubflow-hub.yaml": "images: [datascience]\n"}
    for rel, text in files.items():
        (tmp_path / "repo" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "repo" / rel).write_text(text)
    assert main(["validate", "--config", str(settings), "--fleet", str(tmp_path / "repo" / "hubflow-fleet.yaml")]) == 1
    err = capsys.readouterr().err
    assert "invalid configuration (1 problem)" in err
    assert (f"deployments/{LONG}/hubflow-hub.yaml: (top level): hub '{LONG}' (40 characters): its staging release "
            f"'jupyterhub-{LONG}-staging' is 59 characters, more than helm's limit of 53") in err
