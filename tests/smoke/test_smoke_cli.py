"""`hubflow smoke` as an operator runs it: exit 0 pass, 1 fail, 2 usage or configuration error."""
import json

import pytest

from hubflow.cli import main

pytestmark = pytest.mark.slow


def test_passing_hub_exits_0_with_json(hub, tmp_path, monkeypatch, capsys):
    nb = tmp_path / "check.ipynb"
    nb.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": "import requests"}]}))
    monkeypatch.setenv("HUBFLOW_SMOKE_TOKEN", hub.token)
    code = main(["smoke", "--hub-url", hub.url, "--packages", "requests==2.34.2", "PyYAML", "--notebook", str(nb),
                 "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert out["ok"] and out["hub_version"] == "6.1.1"
    assert {c["name"]: c["status"] for c in out["checks"]} == dict.fromkeys(
        ["health", "api", "leftovers", "user", "server", "kernel", "packages", "notebook", "cleanup"], "passed")
    assert out["user"] not in hub.user_names()


def test_down_hub_exits_1_with_readable_checks(monkeypatch, capsys):
    monkeypatch.setenv("HUBFLOW_SMOKE_TOKEN", "x")
    assert main(["smoke", "--hub-url", "http://127.0.0.1:9", "--packages", "numpy"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["failed", "health", lines[0].split()[2], "GET", "/hub/health:", "connection",
                                "refused"]
    assert lines[-1].startswith("http://127.0.0.1:9: FAILED in ")


@pytest.mark.parametrize("args, env, message", [
    (["--hub-url", "http://127.0.0.1:9"], {}, "error: no smoke token"),
    (["--hub-url", "127.0.0.1:9"], {"HUBFLOW_SMOKE_TOKEN": "x"}, "error: hub URL '127.0.0.1:9' is not an http(s) URL"),
    (["--hub-url", "http://127.0.0.1:9", "--packages", "numpy=="], {"HUBFLOW_SMOKE_TOKEN": "x"},
     "error: --packages: 'numpy==' is not a package requirement"),
    (["--hub-url", "http://127.0.0.1:9", "--notebook", "/nonexistent.ipynb"], {"HUBFLOW_SMOKE_TOKEN": "x"},
     "error: cannot read notebook /nonexistent.ipynb: No such file or directory"),
])
def test_usage_and_configuration_errors_exit_2(args, env, message, monkeypatch, capsys):
    monkeypatch.delenv("HUBFLOW_SMOKE_TOKEN", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["smoke", *args]) == 2
    assert capsys.readouterr().err.startswith(message)


def test_the_token_is_no_command_line_argument(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["smoke", "--hub-url", "http://127.0.0.1:9", "--token", "secret"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --token secret" in capsys.readouterr().err
