"""The plan on real git repositories built in temporary folders: every rule, merges, squashes, renames, deletions."""
import subprocess

import pytest

from hubflow.clients.git import GitError, Repo
from hubflow.core.documents import ConfigError
from hubflow.core.plan import PlanError, image_tag, make_plan
from sandbox.sample_repo import commit, git, make_sample_repo

ENVS = ["staging", "prod"]
FLEET = "hubflow-fleet.yaml"


@pytest.fixture
def sample(tmp_path):
    root = make_sample_repo(tmp_path / "deploy")
    return root, Repo(root), git(root, "rev-parse", "HEAD").strip()


def plan(repo, base, head="HEAD"):
    return make_plan(repo, base, head, FLEET, ENVS)


def hubs(p):
    return {h.name: h.reason for h in p.hubs}


def images(p):
    return {i.name: (i.changed, i.reason) for i in p.images}


def test_first_deploy_deploys_everything(sample):
    root, repo, base = sample
    p = plan(repo, None)
    assert p.base is None
    assert hubs(p) == dict.fromkeys(["biology", "data8", "datahub", "rhub"], "first deploy")
    assert images(p) == {"primary": (True, "first deploy"), "datascience": (True, "first deploy")}
    assert p.removed_hubs == []


def test_nothing_changed(sample):
    root, repo, base = sample
    p = plan(repo, base)
    assert p.hubs == [] and p.images == [] and p.removed_hubs == []


def test_hub_folder_change_deploys_that_hub_only(sample):
    root, repo, base = sample
    commit(root, "tune data8", {"deployments/data8/config/staging.yaml": "jupyterhub: {}\n"})
    p = plan(repo, base)
    assert hubs(p) == {"data8": "deployments/data8/config/staging.yaml changed"}
    # its image is listed (needed for the deploy) but not changed, so nothing is built
    assert images(p) == {"primary": (False, "unchanged")}


def test_image_change_rebuilds_and_deploys_its_hubs(sample):
    root, repo, base = sample
    commit(root, "add scipy", {"images/primary/environment.yml": "dependencies:\n  - scipy=1.14\n"})
    p = plan(repo, base)
    assert hubs(p) == {"datahub": "image primary changed", "data8": "image primary changed"}
    assert images(p) == {"primary": (True, "images/primary/environment.yml changed")}
    assert p.image("primary").changed_files == ["images/primary/environment.yml"]
    assert p.image("primary").hubs == ["data8", "datahub"]
    assert p.image("primary").last_commit == p.head


def test_shared_chart_change_deploys_every_hub(sample):
    root, repo, base = sample
    commit(root, "bump z2jh", {"hub/Chart.yaml": "apiVersion: v2\nname: hub\nversion: 0.2.0\n"})
    p = plan(repo, base)
    assert hubs(p) == dict.fromkeys(["biology", "data8", "datahub", "rhub"], "shared path hub/Chart.yaml changed")
    assert not any(i.changed for i in p.images)


def test_docs_deploy_nothing_even_inside_a_hub_folder(sample):
    root, repo, base = sample
    commit(root, "docs", {"docs/index.md": "new\n", "deployments/datahub/README.md": "new\n",
                          "images/primary/README.md": "new\n"})
    p = plan(repo, base)
    assert p.hubs == [] and p.images == []


def test_new_and_removed_hubs(sample):
    root, repo, base = sample
    commit(root, "add physics, retire biology",
           {"deployments/physics/hubflow-hub.yaml": "images: [datascience]\n",
            "deployments/physics/config/common.yaml": "{}\n",
            "deployments/physics/config/staging.yaml": "{}\n", "deployments/physics/config/prod.yaml": "{}\n",
            "deployments/physics/secrets/staging.yaml": "{}\n", "deployments/physics/secrets/prod.yaml": "{}\n",
            "deployments/biology": None})
    p = plan(repo, base)
    assert hubs(p) == {"physics": "new hub"}
    assert p.removed_hubs == ["biology"]
    assert images(p) == {"datascience": (False, "unchanged")}


def test_rename_counts_on_both_sides(sample):
    root, repo, _ = sample
    base = commit(root, "extra file", {"deployments/data8/config/extra.yaml": "{}\n"})
    git(root, "mv", "deployments/data8/config/extra.yaml", "deployments/datahub/config/extra.yaml")
    commit(root, "move a values file")
    p = plan(repo, base)
    assert set(hubs(p)) == {"data8", "datahub"}


def test_renamed_hub_folder_is_a_new_hub_and_a_removed_one(sample):
    root, repo, base = sample
    git(root, "mv", "deployments/biology", "deployments/bio")
    commit(root, "rename hub")
    p = plan(repo, base)
    assert hubs(p) == {"bio": "new hub"}
    assert p.removed_hubs == ["biology"]


def test_fleet_entry_change_redeploys_affected_hubs(sample):
    root, repo, base = sample
    commit(root, "add smoke packages", {"deployments/biology/hubflow-hub.yaml":
                                        "images: [datascience]\nsmoke:\n  packages: [pandas]\n"})
    p = plan(repo, base)
    assert hubs(p) == {"biology": "deployments/biology/hubflow-hub.yaml changed"}
    fleet = (root / FLEET).read_text().replace("common: [config/common.yaml]",
                                               "common: [config/common.yaml, config/staging.yaml]")
    commit(root, "values order for all", {FLEET: fleet})
    p = plan(repo, base)
    assert set(hubs(p)) == {"biology", "data8", "datahub", "rhub"}
    assert hubs(p)["rhub"] == "fleet entry changed"


def test_merge_commit_and_squash_merge(sample):
    root, repo, base = sample
    git(root, "checkout", "-q", "-b", "feature")
    commit(root, "feature work", {"deployments/rhub/config/common.yaml": "x: 1\n"})
    git(root, "checkout", "-q", "staging")
    commit(root, "someone else", {"deployments/data8/config/common.yaml": "x: 2\n"})
    git(root, "merge", "-q", "--no-ff", "-m", "Merge pull request #1 from org/feature", "feature")
    assert set(hubs(plan(repo, base))) == {"rhub", "data8"}
    merged = git(root, "rev-parse", "HEAD").strip()
    git(root, "checkout", "-q", "-b", "feature2")
    commit(root, "f2 a", {"deployments/biology/config/common.yaml": "x: 3\n"})
    commit(root, "f2 b", {"images/datascience/requirements.txt": "pandas==2.2.3\n"})
    git(root, "checkout", "-q", "staging")
    git(root, "merge", "-q", "--squash", "feature2")
    commit(root, "Feature 2 (#2)")
    p = plan(repo, merged)
    assert hubs(p) == {"biology": "deployments/biology/config/common.yaml changed"}
    assert images(p) == {"datascience": (True, "images/datascience/requirements.txt changed")}


def test_tag_is_content_addressed_and_a_revert_reuses_it(sample):
    root, repo, base = sample
    before = plan(repo, None).image("primary").tag
    commit(root, "change", {"images/primary/Dockerfile": "FROM scratch\n"})
    changed = plan(repo, None).image("primary").tag
    git(root, "revert", "--no-edit", "HEAD")
    after = plan(repo, None).image("primary").tag
    assert before != changed and after == before
    # the single-path tag is the image folder's git tree id, so `git show TAG` shows what was built
    assert git(root, "rev-parse", "HEAD:images/primary").startswith(after)
    assert len(after) >= 7 and not after.isdigit()


def test_tags_never_all_digits():
    assert image_tag([("a", "123456789012" + "0" * 28)]) == "h12345678901"
    assert image_tag([("a", "abc"), ("b", "def")]) != image_tag([("a", "abc"), ("b", "deg")])
    assert image_tag([("a", "1234567890ab" + "0" * 28)]) == "1234567890ab"


@pytest.mark.parametrize("base,head,message", [
    ("nope", "HEAD", "unknown revision 'nope'"),
    (None, "deadbeef" * 5, "unknown revision"),
    (None, "--output=/tmp/x", "is not a revision"),
    (None, "HEAD\nHEAD", "is not a revision"),
])
def test_bad_revisions(sample, base, head, message):
    root, repo, _ = sample
    with pytest.raises(GitError, match=message):
        plan(repo, base, head)


def test_base_not_an_ancestor(sample):
    root, repo, base = sample
    commit(root, "one", {"a.txt": "1"})
    git(root, "checkout", "-q", "-b", "other", base)
    other = commit(root, "two", {"b.txt": "2"})
    with pytest.raises(PlanError, match="is not an ancestor"):
        plan(repo, "staging", other)


def test_not_a_repository(tmp_path):
    with pytest.raises(GitError, match="is not a git repository"):
        Repo(tmp_path)
    with pytest.raises(GitError, match="no such directory"):
        Repo(tmp_path / "missing")


def test_fleet_naming_missing_paths_is_refused_with_the_field(sample):
    root, repo, base = sample
    commit(root, "break", {"deployments/datahub/secrets/staging.yaml": None, "images/datascience": None})
    with pytest.raises(ConfigError) as err:
        plan(repo, base)
    text = str(err.value)
    assert "hubs[2].values.staging[1] (datahub): 'deployments/datahub/secrets/staging.yaml' does not exist" in text
    assert "images[1].paths[0]: 'images/datascience' does not exist" in text


def test_fleet_file_missing_at_head(sample):
    root, repo, base = sample
    commit(root, "drop fleet", {FLEET: None})
    with pytest.raises(PlanError, match="does not exist at head"):
        plan(repo, base)


def count_git(monkeypatch):
    calls = []
    real = subprocess.Popen  # the git runner starts every process with Popen

    def spy(args, *a, **kw):
        calls.append(args)
        return real(args, *a, **kw)
    monkeypatch.setattr(subprocess, "Popen", spy)
    return calls


@pytest.mark.parametrize("first", [True, False])
def test_git_processes_do_not_grow_with_hubs(tmp_path, monkeypatch, first):
    counts = []
    for n in (4, 40):
        root = make_sample_repo(tmp_path / f"r{n}", hubs=n)
        base = git(root, "rev-parse", "HEAD").strip()
        commit(root, "touch every hub and an image", {
            **{f"deployments/{d.name}/config/common.yaml": "{}\n" for d in (root / "deployments").iterdir()},
            "images/primary/Dockerfile": "FROM scratch\n"})
        calls = count_git(monkeypatch)
        p = make_plan(Repo(root), None if first else base, "HEAD", FLEET, ENVS)
        monkeypatch.undo()
        assert len(p.hubs) == n
        counts.append(len(calls))
    assert counts[0] == counts[1] > 0


def test_also_deploys_named_hubs_with_their_images(sample):
    root, repo, base = sample
    commit(root, "docs only", {"docs/index.md": "x\n"})
    p = make_plan(repo, base, "HEAD", FLEET, ENVS, also={"biology": "redeploy after a revert", "gone": "ignored"})
    assert hubs(p) == {"biology": "redeploy after a revert"}
    assert images(p) == {"datascience": (False, "unchanged")}


def test_a_bad_discovery_pattern_is_a_config_error_not_a_crash(sample):
    root, repo, base = sample
    fleet = (root / FLEET).read_text() + '  - pattern: "a]b["\n'
    commit(root, "bad pattern", {FLEET: fleet})
    with pytest.raises(ConfigError) as err:
        plan(repo, base)
    assert [(p, "unbalanced" in r) for _, p, r in err.value.problems] == [("hub_discovery[1].pattern", True)]


def test_a_build_context_must_be_a_folder_of_the_tree_never_a_link(sample):
    root, repo, base = sample
    (root / "images" / "creds").symlink_to("/var/run/secrets/registry")
    fleet = (root / FLEET).read_text().replace(
        "paths: [images/primary]", "paths: [images/primary]\n    context: images/creds").replace(
        "paths: [images/datascience]", "paths: [images/datascience]\n    dockerfile: Dockerfile.gpu")
    commit(root, "build from the registry credentials", {FLEET: fleet})
    with pytest.raises(ConfigError) as err:
        plan(repo, base)
    found = {p: r for _, p, r in err.value.problems}
    assert found["images[0].context"].startswith("build context 'images/creds' is not a folder")
    assert found["images[1].dockerfile"].startswith("'images/datascience/Dockerfile.gpu' does not exist")


# ---------------------------------------------------------------- rendered names (issue 17, scenario 14)


def new_hub(name: str) -> dict[str, str | None]:
    """The files of a new discovered hub, with every values file the sample's hub_defaults name."""
    files = ["config/common.yaml", "config/staging.yaml", "config/prod.yaml", "secrets/staging.yaml",
             "secrets/prod.yaml"]
    return {f"deployments/{name}/hubflow-hub.yaml": "images: [datascience]\n",
            **{f"deployments/{name}/{f}": "{}\n" for f in files}}


def environments(staging: str, prod: str):
    from hubflow.core.settings import parse_settings

    return parse_settings(f"""
repository: {{github: org/deploy, clone_url: https://github.com/org/deploy.git}}
environments:
  - {{name: staging, branch: staging, hub_url: x, {staging}}}
  - {{name: prod, branch: prod, hub_url: x, {prod}}}
""").environments


def test_a_new_hub_whose_release_helm_would_refuse_cannot_be_planned(sample):
    root, repo, base = sample
    envs = environments('release: "jupyterhub-{hub}-{env}"', 'release: "jupyterhub-{hub}-{env}"')
    long = "a-hub-name-of-forty-characters-for-maths"
    commit(root, "add a hub with a long name", new_hub(long))
    with pytest.raises(ConfigError) as err:
        make_plan(repo, base, "HEAD", FLEET, envs)
    assert {f for f, _, _ in err.value.problems} == {f"deployments/{long}/hubflow-hub.yaml"}
    assert f"its staging release 'jupyterhub-{long}-staging' is 59 characters, more than helm's limit of 53" \
           in str(err.value)
    assert hubs(make_plan(repo, base, "HEAD", FLEET, ENVS)) == {long: "new hub"}  # by name: not checked


def test_a_range_that_mends_two_colliding_hubs_plans(sample):
    """The fleet at the base is what runs now: only the head's names must be right, or nothing could mend them."""
    root, repo, base = sample
    envs = environments('release: "{hub}-staging", namespace: "{hub}-staging"', 'release: "{hub}", namespace: "{hub}"')
    broken = commit(root, "add data8-staging", new_hub("data8-staging"))
    with pytest.raises(ConfigError, match="hub 'data8-staging' in prod and hub 'data8' in staging render the same"):
        make_plan(repo, base, broken, FLEET, envs)
    commit(root, "rename it", {**dict.fromkeys(new_hub("data8-staging")), **new_hub("physics")})
    p = make_plan(repo, broken, "HEAD", FLEET, envs)
    assert hubs(p) == {"physics": "new hub"} and p.removed_hubs == ["data8-staging"]
