"""Who is to blame when the docker builder (an environment's `builder: docker`) delivers no image.

The client (hubflow.clients.docker_builder) says at which stage it stopped, with the engine's or the registry's own
message; this judges it into the Fault `deploy.pod_fault` gives for a build pod, so the build task's `fault`
XCom reads the same for both builders and `conclude` reads it unchanged.
Only a Dockerfile the engine could not build blames the revision, and not even that when the message says a
registry could not be reached (a base image behind a network fault); every other stage is the platform's.
"""
from __future__ import annotations

from hubflow.core.deploy import PodFacts, pod_fault
from hubflow.core.outcomes import Blame, Fault

ENGINE = "engine"  # the Docker engine is unreachable or broke off
REGISTRY = "registry"  # the registry could not be asked whether the tag exists
CONTEXT = "context"  # the build context could not be read from git
BUILD = "build"  # the engine ran the Dockerfile and it failed
PUSH = "push"  # the registry refused or lost the push, or the engine reported no digest
STAGES = (ENGINE, REGISTRY, CONTEXT, BUILD, PUSH)

_PLATFORM = {ENGINE: "the Docker engine could not be used", REGISTRY: "the registry cannot be read",
             CONTEXT: "the build context could not be read from git", PUSH: "the push to the registry failed"}


def build_fault(stage: str, message: str) -> Fault:
    """The verdict on a docker build that stopped at `stage` with `message`."""
    if stage not in STAGES:
        raise ValueError(f"unknown build stage {stage!r}; known: {list(STAGES)}")
    if stage == BUILD:  # the same judgement as a build pod that exited non-zero with this message
        return pod_fault("build", PodFacts(exit_code=1, message=message))
    last = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return Fault(Blame.PLATFORM, f"{_PLATFORM[stage]}: {last[-1] if last else 'no message'}")


def exit_code(fault: Fault) -> int:
    """`hubflow build`'s exit code for a verdict: 1 the revision's Dockerfile failed, 3 the platform failed."""
    return 1 if fault.blame is Blame.REVISION else 3
