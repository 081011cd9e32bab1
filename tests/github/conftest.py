"""Fixtures: a sample deployment repository with a bare origin, the GitHub emulator over it, and hubflow's GitHub."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from github import Auth, Github

from hubflow.clients import github
from hubflow.core.settings import load_settings
from sandbox.github_emulator import GitHubEmulator
from sandbox.sample_repo import make_sample_repo


@pytest.fixture(scope="session")
def sample_origin(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample")
    make_sample_repo(root / "work", bare=root / "origin.git")
    return root / "origin.git"


@pytest.fixture
def origin(sample_origin, tmp_path):
    """A fresh copy of the sample repository's bare origin (branches staging and prod at one commit)."""
    return Path(shutil.copytree(sample_origin, tmp_path / "origin.git"))


@pytest.fixture
def emulator(origin):
    with GitHubEmulator(origin) as em:
        yield em


@pytest.fixture(scope="session")
def example_settings():
    return load_settings()


@pytest.fixture
def settings(example_settings, emulator):
    """include/hubflow.yaml, pointed at the emulator's repository, with promotion reviewers."""
    base = example_settings
    return base.model_copy(update={
        "repository": base.repository.model_copy(update={"clone_url": emulator.clone_url}),
        "promotion": base.promotion.model_copy(update={"reviewers": ["alice", "bob"]}),
    })


def make_client(emulator, timeout: int = 5) -> Github:
    """What hubflow.airflow.hooks.github_client builds from a token connection, minus Airflow."""
    return github.make_client(Auth.Token(emulator.token), emulator.url, timeout)


@pytest.fixture
def sleeps():
    """The waits GitHub asked for, recorded instead of slept."""
    return []


@pytest.fixture
def new_gh(settings, emulator, sleeps):
    """GitHub(...) over the emulator; keyword arguments change the settings, the client timeout or the retry bounds."""
    def make(settings=settings, timeout: int = 5, **kwargs) -> github.GitHub:
        return github.GitHub(settings, make_client(emulator, timeout), sleep=sleeps.append, **kwargs)
    return make


@pytest.fixture
def gh(new_gh):
    return new_gh()


@pytest.fixture
def github_conn(emulator, monkeypatch):
    """An Airflow GitHub connection (from the environment) whose host is the emulator."""
    monkeypatch.setenv("AIRFLOW_CONN_GITHUB_EMULATOR", json.dumps(
        {"conn_type": "github", "host": emulator.url, "password": emulator.token}))
    return "github_emulator"
