"""The layers hold: nothing outside hubflow/airflow imports Airflow, the core imports none of the outer layers, and
the fast commands (`plan`, `validate`, `render`) load neither Airflow nor the pod operator."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "plugins" / "hubflow"
# layer -> the packages it must not import at run time (annotations under TYPE_CHECKING are free)
FORBIDDEN = {
    "core": ("airflow", "hubflow.clients", "hubflow.k8s", "hubflow.airflow", "kubernetes", "github", "requests"),
    "clients": ("airflow", "hubflow.k8s", "hubflow.airflow"),
    "k8s": ("airflow", "hubflow.clients", "hubflow.airflow"),
}


def runtime_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    guarded = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
               and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}
    names = []
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def modules():
    return sorted(p for p in LIBRARY.rglob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(LIBRARY)))
def test_each_module_imports_only_what_its_layer_may(path):
    rel = path.relative_to(LIBRARY)
    layer = rel.parts[0] if len(rel.parts) > 1 else None
    imports = runtime_imports(path)
    if layer != "airflow":
        assert not [m for m in imports if m == "airflow" or m.startswith("airflow.")], \
            f"{rel} imports Airflow; only hubflow/airflow/ may"
    for banned in FORBIDDEN.get(layer, ()):
        hits = [m for m in imports if m == banned or m.startswith(banned + ".")]
        assert not hits, f"{rel} ({layer}) imports {hits}"


def test_the_checker_sees_an_import_it_must_refuse(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import airflow\nfrom airflow.sdk import dag\n")
    assert runtime_imports(bad) == ["typing", "airflow.sdk"]


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
