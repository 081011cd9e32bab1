"""Who is to blame when the docker builder delivers no image (hubflow.core.builds)."""
from __future__ import annotations

import pytest

from hubflow.core.builds import BUILD, CONTEXT, ENGINE, PUSH, REGISTRY, build_fault, exit_code
from hubflow.core.outcomes import Blame, Fault


def test_a_dockerfile_that_fails_blames_the_revision_with_the_engines_last_line():
    fault = build_fault(BUILD, 'building at STEP "COPY nope.txt /n":\ncopier: stat: "/nope.txt": no such file\n')
    assert fault == Fault(Blame.REVISION, 'the image build failed: copier: stat: "/nope.txt": no such file')
    assert exit_code(fault) == 1


def test_a_build_that_could_not_reach_a_registry_blames_the_platform():
    fault = build_fault(BUILD, 'creating build container: pinging container registry 127.0.0.1:1: Get '
                               '"http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused')
    assert fault.blame is Blame.PLATFORM and fault.summary.startswith("the build could not reach the registry: ")
    assert exit_code(fault) == 3


@pytest.mark.parametrize("stage, start", [
    (ENGINE, "the Docker engine could not be used: "), (REGISTRY, "the registry cannot be read: "),
    (CONTEXT, "the build context could not be read from git: "), (PUSH, "the push to the registry failed: ")])
def test_every_other_stage_is_the_platforms(stage, start):
    fault = build_fault(stage, "x:1 was not pushed: unauthorized: authentication required\n")
    assert fault == Fault(Blame.PLATFORM, start + "x:1 was not pushed: unauthorized: authentication required")


def test_an_unknown_stage_is_a_bug_not_a_verdict():
    with pytest.raises(ValueError, match="unknown build stage 'pull'"):
        build_fault("pull", "?")


@pytest.mark.parametrize("message, cause", [
    ("STEP 3/4: RUN pip install -r requirements.txt\nWARNING: Retrying (Retry(total=0)) after connection broken by "
     "'NewConnectionError(': Failed to establish a new connection: [Errno -3] Temporary failure in name "
     "resolution')': /simple/pandas/\nERROR: No matching distribution found for pandas==2.2.3\n"
     "error building at STEP \"RUN pip install -r requirements.txt\": exit status 1\n",
     "temporary failure in name resolution"),
    ("CondaHTTPError: HTTP 000 CONNECTION FAILED for url <https://conda.anaconda.org/conda-forge/noarch/"
     "repodata.json>\nerror building at STEP \"RUN mamba env update\": exit status 1\n", "connection failed"),
    ("Err:1 http://deb.debian.org/debian bookworm InRelease\n  Temporary failure resolving 'deb.debian.org'\n"
     "E: Unable to locate package git\nerror building at STEP \"RUN apt-get install git\": exit status 100\n",
     "temporary failure resolving"),
])
def test_a_dockerfile_step_that_lost_the_network_is_the_platforms_fault_with_the_same_words_as_a_build_pod(
        message, cause):
    from hubflow.core.deploy import PodFacts, pod_fault

    fault = build_fault(BUILD, message)
    assert fault.blame is Blame.PLATFORM and fault.summary.startswith(f"the build failed on the network ({cause}): ")
    assert fault == pod_fault("build", PodFacts(exit_code=1, message=message))  # both builders judge alike
    assert exit_code(fault) == 3


def test_a_dockerfile_that_really_fails_stays_the_revisions_fault():
    fault = build_fault(BUILD, "ERROR: No matching distribution found for hubflow-no-such-package==1.0\n"
                               "error building at STEP \"RUN pip install -r requirements.txt\": exit status 1\n")
    assert fault.blame is Blame.REVISION and exit_code(fault) == 1
