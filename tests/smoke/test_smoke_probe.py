"""The package probe that runs inside a hub's kernel, run here in-process against this venv and fake installs."""
import json
import sys

import pytest
import yaml

from hubflow.clients import probe as package_probe, smoke
from hubflow.clients.notebook import parse_notebook
from hubflow.clients.probe import probe
from hubflow.clients.smoke import NEEDED_SCOPES, RUN_NOTE, SmokeError, held_until
from hubflow.core.packages import Package


def run(*packages):
    events = []
    probe([p.to_dict() for p in packages], events.append, {})
    assert [e["name"] for e in events] == [p.name for p in packages]  # in order: a crash tells how far it got
    return {r["name"]: r for r in events}


def test_installed_pinned_and_prefix_pinned_packages_pass():
    out = run(Package("requests", "2.34.2"), Package("PyYAML", "6.0.4"), Package("tornado", "6.6", exact=False),
              Package("websocket_client"))
    assert {n: r["status"] for n, r in out.items()} == dict.fromkeys(out, "ok")
    assert out["PyYAML"]["modules"] == ["yaml"]  # top-level module found from the distribution, not the name
    assert out["websocket_client"]["modules"] == ["websocket"]


def test_missing_mismatched_and_broken_packages(tmp_path, monkeypatch):
    dist = tmp_path / "brokenpkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenpkg\nVersion: 1.0\n")
    (dist / "top_level.txt").write_text("brokenpkg\n")
    (tmp_path / "brokenpkg.py").write_text("raise ImportError('libfoo.so.1: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = run(Package("nosuchpkg-hubflow"), Package("requests", "2.0.0"), Package("brokenpkg"))
    assert out["nosuchpkg-hubflow"]["status"] == "missing"
    assert (out["requests"]["status"], out["requests"]["installed"]) == ("version", "2.34.2")
    assert out["brokenpkg"]["status"] == "import"
    assert out["brokenpkg"]["error"] == "import brokenpkg: ImportError: libfoo.so.1: cannot open shared object file"


def test_conda_packages_without_python_modules_come_from_conda_meta(tmp_path, monkeypatch):
    (tmp_path / "conda-meta").mkdir()
    (tmp_path / "conda-meta" / "r-base-4.4.1-h1.json").write_text(json.dumps({"name": "r-base", "version": "4.4.1"}))
    (tmp_path / "conda-meta" / "r-base64-1.0-h1.json").write_text(json.dumps({"name": "r-base64", "version": "1.0"}))
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    out = run(Package("r-base", "4.4", exact=False, conda=True), Package("r-base64", "2.0", conda=True),
              Package("nodejs", conda=True))
    assert (out["r-base"]["status"], out["r-base"]["installed"]) == ("ok", "4.4.1")
    assert (out["r-base64"]["status"], out["r-base64"]["installed"]) == ("version", "1.0")
    assert out["nodejs"]["status"] == "missing"


def test_markers_that_do_not_apply_are_not_checked():
    out = run(Package("nosuchpkg-hubflow", marker='python_version < "3"'))
    assert out["nosuchpkg-hubflow"]["status"] == "not-applicable"


def test_leftover_users_are_told_apart_by_their_run_token():
    """The smoke users have fixed names (scope filters name users): a run token that has not expired holds them."""
    run = {"note": RUN_NOTE, "expires_at": "2033-05-18T03:33:20Z"}  # 2_000_000_000
    assert held_until([run], now=1_999_999_999) == 2_000_000_000
    assert held_until([run], now=2_000_000_001) is None  # that run is over: a leftover
    assert held_until([], now=0) is None  # a crash before its token was made
    assert held_until([{"note": "made by hand", "expires_at": run["expires_at"]}, {"note": RUN_NOTE,
                                                                                  "expires_at": None}], now=0) is None


def test_the_documented_z2jh_role_is_what_the_scope_check_needs():
    snippet = smoke.__doc__.split("In z2jh values:", 1)[1].split("\n\n", 2)[1]
    role = yaml.safe_load(snippet)["hub"]["loadRoles"]["hubflow-smoke"]
    assert role == {"services": ["hubflow-smoke"], "scopes": list(NEEDED_SCOPES)}


def notebook_json(*cells, minor=5):
    code = {"outputs": [], "execution_count": None}
    return json.dumps({"nbformat": 4, "nbformat_minor": minor, "metadata": {}, "cells": [
        dict(c, metadata={}, **(code if c["cell_type"] == "code" else {})) for c in cells]})


def test_notebook_cells_keep_their_position():
    nb = parse_notebook(notebook_json(
        {"cell_type": "markdown", "source": "# title"},
        {"cell_type": "code", "source": ["import os\n", "os.getcwd()"]},
        {"cell_type": "code", "source": "  "}, minor=4), "smoke.ipynb")
    assert nb.cells == [(2, "import os\nos.getcwd()")]
    with pytest.raises(SmokeError, match="notebook bad.ipynb is not a Jupyter notebook"):
        parse_notebook("{not json", "bad.ipynb")


def test_a_notebook_nbformat_refuses_is_named_with_the_reason_and_where():
    """What Jupyter could not open, or the notebook schema refuses, fails before any hub is touched."""
    with pytest.raises(SmokeError, match=r"^notebook bare.ipynb is not a Jupyter notebook \(nbformat 4 JSON\): "
                                         r"The notebook is invalid and is missing an expected key: metadata$"):
        parse_notebook(json.dumps({"nbformat": 4, "cells": []}), "bare.ipynb")
    bad = json.loads(notebook_json({"cell_type": "code", "source": "1"}))
    bad["cells"][0]["execution_count"] = "x" * 500  # the schema error quotes it: the reason stays short
    with pytest.raises(SmokeError) as err:
        parse_notebook(json.dumps(bad), "bad.ipynb")
    assert str(err.value).startswith("notebook bad.ipynb is not a Jupyter notebook (nbformat 4 JSON): 'xxx")
    assert str(err.value).endswith("… (at cells/0/execution_count)") and len(str(err.value)) < 300
    with pytest.raises(SmokeError, match="Unsupported nbformat version 9"):
        parse_notebook(json.dumps({"nbformat": 9, "cells": []}), "future.ipynb")


def test_cells_without_ids_are_read_without_a_warning(recwarn):
    nb = parse_notebook(notebook_json({"cell_type": "code", "source": "x = 1"}), "smoke.ipynb")
    assert nb.cells == [(1, "x = 1")]
    assert [str(w.message) for w in recwarn] == []


def test_the_probe_runs_as_a_kernel_runs_it(capsys):
    """The code sent into the kernel (the definition, then one call per package), here in a fresh namespace."""
    namespace = {}
    exec(package_probe.definition(), namespace)
    exec(package_probe.call(Package("requests", "2.34.2")), namespace)
    exec(package_probe.call(Package("nosuchpkg-hubflow", "1.0")), namespace)
    out = capsys.readouterr().out.split(package_probe.MARK)
    first, second = (package_probe.result(package_probe.MARK + text) for text in out[1:])
    assert (first["status"], package_probe.problem(first), package_probe.shown(first)) == (
        "ok", None, "requests 2.34.2")
    assert package_probe.problem(second) == "nosuchpkg-hubflow==1.0 is not installed"
    assert package_probe.result("no probe here\n") is None
