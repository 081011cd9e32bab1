"""Plan time against fleet size: generated repositories with 3, 30 and 300 hubs, measured side by side in one run.

For each size, one commit touches every hub folder and one image; the plan of that range (and of a first deploy)
is timed (median of several runs) and the git processes it started are counted. Ratios are against 3 hubs.

    .venv/bin/python bench/plan_bench.py [--runs 5]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "plugins")]

from hubflow.clients.git import Repo  # noqa: E402
from hubflow.core.plan import make_plan  # noqa: E402
from sandbox.sample_repo import commit, git, make_sample_repo  # noqa: E402

SIZES = (3, 30, 300)


def measure(root: Path, base: str | None, runs: int) -> tuple[float, int, int]:
    """Median wall time of a plan and the git processes it starts (every process starts through Popen)."""
    calls = 0
    real = subprocess.Popen

    class Counting(real):
        def __init__(self, *a, **kw):
            nonlocal calls
            calls += 1
            super().__init__(*a, **kw)
    times = []
    for _ in range(runs):
        calls = 0
        subprocess.Popen = Counting
        start = time.perf_counter()
        plan = make_plan(Repo(root), base, "HEAD", "hubflow-fleet.yaml", ["staging", "prod"])
        times.append(time.perf_counter() - start)
        subprocess.Popen = real
    return statistics.median(times), calls, len(plan.hubs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in SIZES:
            root = make_sample_repo(Path(tmp) / f"fleet{n}", hubs=n)
            base = git(root, "rev-parse", "HEAD").strip()
            commit(root, "touch every hub and the primary image", {
                **{f"deployments/{d.name}/config/common.yaml": "changed: true\n"
                   for d in (root / "deployments").iterdir()},
                "images/primary/Dockerfile": "FROM scratch\n"})
            rows.append((n, measure(root, base, args.runs), measure(root, None, args.runs)))
    first = rows[0]
    print(f"{'hubs':>5} {'range plan':>11} {'ratio':>6} {'git procs':>9} "
          f"{'first deploy':>13} {'ratio':>6} {'git procs':>9}")
    for n, (t, procs, deployed), (t0, procs0, _) in rows:
        assert deployed == n
        print(f"{n:>5} {t * 1000:>9.1f}ms {t / first[1][0]:>5.2f}x {procs:>9} {t0 * 1000:>11.1f}ms "
              f"{t0 / first[2][0]:>5.2f}x {procs0:>9}")
    print(f"hubs x{SIZES[-1] // SIZES[0]} -> range plan time x{rows[-1][1][0] / first[1][0]:.2f}")


if __name__ == "__main__":
    main()
