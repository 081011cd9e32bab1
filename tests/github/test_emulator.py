"""The emulator's own contract: unknown requests name themselves, credentials are required, GETs carry ETags."""
from __future__ import annotations

import os
import subprocess

import requests


def get(emulator, path, **headers):
    return requests.get(emulator.url + path, headers={"Authorization": f"token {emulator.token}", **headers},
                        timeout=5)


def test_an_unknown_request_answers_404_naming_it(emulator):
    answer = get(emulator, "/repos/datahub/datahub/teams?page=2")
    assert answer.status_code == 404
    assert "no route for GET /repos/datahub/datahub/teams" in answer.json()["message"]
    assert get(emulator, "/repos/someone/else").status_code == 404
    assert emulator.requests[-1].path == "/repos/someone/else" and emulator.requests[-1].status == 404


def test_requests_without_the_token_are_refused(emulator):
    assert requests.get(emulator.url + "/repos/datahub/datahub", timeout=5).status_code == 401
    assert get(emulator, "/repos/datahub/datahub", Authorization="token wrong").status_code == 401
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    clone = subprocess.run(["git", "ls-remote", emulator.clone_url], capture_output=True, env=env)
    assert clone.returncode != 0


def test_gets_carry_an_etag_and_a_match_answers_304_for_free(emulator):
    first = get(emulator, "/repos/datahub/datahub/branches/staging")
    used = int(first.headers["X-RateLimit-Used"])
    again = get(emulator, "/repos/datahub/datahub/branches/staging", **{"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""
    assert int(again.headers["X-RateLimit-Used"]) == used and emulator.rate_used == used
    emulator.push("staging", "move", {"README.md": "moved\n"})
    moved = get(emulator, "/repos/datahub/datahub/branches/staging", **{"If-None-Match": first.headers["ETag"]})
    assert moved.status_code == 200 and moved.json()["commit"]["sha"] == emulator.head("staging")
