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
