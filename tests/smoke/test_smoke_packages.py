"""Which packages a verification checks, derived from real git diffs of requirements.txt and environment.yml."""
import pytest

from hubflow.clients.git import Repo
from hubflow.core.packages import (
    Package,
    PackagesError,
    changed_packages,
    hub_packages,
    parse_conda,
    parse_environment,
    parse_package,
    parse_requirements,
)
from hubflow.core.plan import make_plan
from sandbox.sample_repo import commit, git, make_sample_repo

PRIMARY = ["images/primary"]
DATASCIENCE = ["images/datascience"]


@pytest.fixture
def sample(tmp_path):
    root = make_sample_repo(tmp_path / "deploy")
    return root, Repo(root), git(root, "rev-parse", "HEAD").strip()


def specs(packages):
    return [str(p) for p in packages]


def test_requirements_txt_edits_give_added_and_repinned_packages(sample):
    root, repo, base = sample
    head = commit(root, "datascience: bump pandas, add pyyaml and a dev file, drop scikit-learn", {
        "images/datascience/requirements.txt": "# data stack\npandas==2.2.4\nPyYAML>=6  # loader\n",
        "images/datascience/requirements-dev.txt": "pytest==9.2.0 \\\n    --hash=sha256:abc\n-r requirements.txt\n",
    })
    assert specs(changed_packages(repo, base, head, DATASCIENCE)) == ["pandas==2.2.4", "pytest==9.2.0", "PyYAML"]
    assert changed_packages(repo, base, head, PRIMARY) == []


def test_environment_yml_conda_and_pip_sections(sample):
    root, repo, base = sample
    head = commit(root, "primary: numpy 2.2, scipy, pip requests", {
        "images/primary/environment.yml": "name: primary\ndependencies:\n  - python=3.12\n  - numpy=2.2\n"
                                          "  - conda-forge::scipy\n  - pip:\n    - otter-grader==6.0.0\n"
                                          "    - requests[socks]==2.34.2\n",
    })
    changed = changed_packages(repo, base, head, PRIMARY)
    assert specs(changed) == ["numpy==2.2.*", "requests==2.34.2", "scipy"]
    numpy, requests, scipy = changed
    assert numpy.conda and not numpy.exact and numpy.version == "2.2"
    assert not requests.conda and requests.exact
    assert scipy.conda and scipy.version is None
    assert numpy.source == f"images/primary/environment.yml@{head[:12]}: dependencies[1]"


def test_same_revision_and_first_deploy(sample):
    root, repo, base = sample
    assert changed_packages(repo, base, base, PRIMARY) == []
    assert specs(changed_packages(repo, None, base, PRIMARY)) == ["numpy==2.1.3.*", "otter-grader==6.0.0",
                                                                  "python==3.12.*"]


def test_hub_packages_join_the_image_diff_and_the_always_check_list(sample):
    root, repo, base = sample
    head = commit(root, "primary: add requests; datahub pins numpy", {
        "images/primary/requirements.txt": "requests==2.34.2\n",
        "deployments/datahub/hubflow-hub.yaml": "images: [primary]\nsmoke:\n  packages: [numpy, tornado==6.6.1]\n",
    })
    fleet = make_plan(repo, base, head, "hubflow-fleet.yaml").fleet
    assert specs(hub_packages(repo, fleet, "datahub", base, head)) == ["requests==2.34.2", "numpy", "tornado==6.6.1"]
    assert specs(hub_packages(repo, fleet, "data8", base, head)) == ["requests==2.34.2"]
    assert hub_packages(repo, fleet, "biology", base, head) == []
    assert hub_packages(repo, fleet, "rhub", base, head) == []  # external image: nothing of ours to diff
    with pytest.raises(PackagesError, match="hub 'nosuch' is not in the fleet"):
        hub_packages(repo, fleet, "nosuch", base, head)


def test_requirement_lines():
    text = ("numpy==2.1.*\n-e git+https://example.org/x.git#egg=x\nhttps://example.org/y.whl\n./local\n"
            "--index-url https://pypi.example.org\nfoo[bar]>=1 ; python_version < '3.8'\n\n# only a comment\n")
    assert parse_requirements(text, "r.txt") == [Package("numpy", "2.1", exact=False),
                                                 Package("foo", marker='python_version < "3.8"')]
    with pytest.raises(PackagesError, match=r"r.txt:2: 'pandas >> 1' is not a package requirement: Expected"):
        parse_requirements("ok\npandas >> 1\n", "r.txt")


def test_conda_specs():
    assert parse_conda("numpy==2.1.3", "e") == Package("numpy", "2.1.3", conda=True)
    assert parse_conda("numpy 2.1.*", "e") == Package("numpy", "2.1", exact=False, conda=True)
    assert parse_conda("numpy=2.1.3=py312h1", "e") == Package("numpy", "2.1.3", exact=False, conda=True)
    assert parse_conda("numpy>=2,<3", "e") == Package("numpy", conda=True)
    assert parse_conda("r-base", "e") == Package("r-base", conda=True)
    with pytest.raises(PackagesError, match="environment.yml: dependencies\\[0\\]: expected a conda spec"):
        parse_environment("dependencies:\n  - {channel: x}\n", "environment.yml")


def test_package_spec_from_the_command_line():
    assert parse_package("scikit-learn==1.5.2") == Package("scikit-learn", "1.5.2")
    with pytest.raises(PackagesError, match="--packages: 'numpy==' is not a package requirement"):
        parse_package("numpy==", "--packages")
