"""The fast commands (`plan`, `validate`, `render`) load neither Airflow nor the pod operator: what running them
really imports. The layers themselves (nothing outside hubflow/airflow imports Airflow, the core none of the outer
layers, annotations under TYPE_CHECKING free) are import-linter contracts in pyproject.toml, checked by `make lint`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("args", [
    ["plan", "--repo", "{repo}", "--head", "staging", "--json"],
    ["validate", "--repo", "{repo}", "--revision", "staging"],
    ["render", "--env", "staging", "--head", "staging", "--repo", "{repo}"],
])
def test_fast_commands_load_no_airflow(tmp_path, args):
    from sandbox.sample_repo import make_sample_repo

    repo = make_sample_repo(tmp_path / "repo")
    code = ("import sys, io, contextlib; from hubflow.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): rc = main(sys.argv[1:])\n"
            "loaded = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.'))\n"
            "print(rc, len(loaded), loaded[:3])")
    out = subprocess.run([sys.executable, "-c", code, *[a.format(repo=repo) for a in args]], capture_output=True,
                         text=True, timeout=120, cwd=ROOT, env={"PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}",
                                                                "PATH": "/usr/bin:/bin"})
    assert out.stdout.split()[:2] == ["0", "0"], out.stdout + out.stderr
