"""Time each phase of a full smoke verification against a real local JupyterHub, and the share spent on the spawn.

    .venv/bin/python bench/smoke_bench.py [--runs 3]

A full verification: health, api, leftovers, a user and its token, spawn + readiness, a kernel over the websocket,
four packages, a two-cell notebook, cleanup. Target: under 15 s here. The spawn is mostly the single-user server
starting its Python process, which is timed on its own for comparison.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "plugins")]

from hubflow.clients.notebook import parse_notebook  # noqa: E402
from hubflow.clients.smoke import CHECKS, verify  # noqa: E402
from hubflow.core.packages import parse_package  # noqa: E402
from sandbox.jupyterhub_local import LocalHub  # noqa: E402

TARGET_SECONDS = 15
PACKAGES = ["requests", "PyYAML==6.0.4", "websocket-client", "tornado==6.6.*"]
NOTEBOOK = json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
    {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": src}
    for src in ("import yaml\ndata = yaml.safe_load('a: [1, 2]')", "assert sum(data['a']) == 3")]})


def singleuser_import_seconds() -> float:
    """A fresh interpreter importing what jupyterhub-singleuser imports before it listens."""
    t = time.monotonic()
    subprocess.run([sys.executable, "-c", "import jupyterhub.singleuser, jupyter_server.serverapp"], check=True)
    return time.monotonic() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    t = time.monotonic()
    hub = LocalHub().start()
    hub_start = time.monotonic() - t
    results = []
    try:
        packages = [parse_package(p) for p in PACKAGES]
        notebook = parse_notebook(NOTEBOOK, "bench.ipynb")
        for _ in range(args.runs):
            result = verify(hub.url, hub.token, packages, notebook, timeout=120)
            if not result.ok:
                sys.exit(f"verification failed: {[(c.name, c.detail) for c in result.failures]}")
            results.append(result)
    finally:
        hub.remove()
    imports = singleuser_import_seconds()

    totals = [r.seconds for r in results]
    total = statistics.median(totals)
    print(f"JupyterHub {results[0].hub_version} on loopback, started in {hub_start:.1f}s; {args.runs} full "
          f"verifications ({len(PACKAGES)} packages, 2 notebook cells)\n")
    runs = "".join(f"{'run ' + str(i + 1):>9}" for i in range(args.runs))
    print(f"{'phase':<12}{runs}{'median':>9}{'share':>8}")
    for name in CHECKS:
        values = [r.check(name).seconds for r in results]
        median = statistics.median(values)
        print(f"{name:<12}" + "".join(f"{v:9.2f}" for v in values) + f"{median:9.2f}{median / total:8.0%}")
    print(f"{'total':<12}" + "".join(f"{v:9.2f}" for v in totals) + f"{total:9.2f}{1:8.0%}\n")
    spawn = statistics.median(r.check("server").seconds for r in results)
    print(f"waiting for the spawn: {spawn:.2f}s of {total:.2f}s = {spawn / total:.0%} of a verification")
    print(f"single-user server imports alone (fresh interpreter): {imports:.2f}s")
    verdict = "met" if total < TARGET_SECONDS else "MISSED"
    print(f"target: full verification under {TARGET_SECONDS}s: {verdict} (median {total:.2f}s)")


if __name__ == "__main__":
    main()
