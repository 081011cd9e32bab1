"""Seconds the real KubernetesPodOperator spends per pod against the emulator, sync and deferrable.

    .venv/bin/python -m tests.k8s.measure_pods [PODS]

Runs the test DAGs with PODS mapped status pods (default 5) in each mode, after one warm-up run, and prints each
task's duration (start to end, as Airflow records it) and the requests the operator made per pod.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

from tests import airflow_support

airflow_support.setup_environment()


def main(n: int = 5) -> None:
    from hubflow.core.settings import load_settings
    from hubflow.k8s import pods
    from sandbox.k8s_emulator import K8sEmulator
    from tests.k8s.conftest import DAGS, SETTINGS

    tmp = Path(tempfile.mkdtemp(prefix="hubflow-measure-"))
    (tmp / "hubflow.yaml").write_text(SETTINGS)
    os.environ["HUBFLOW_K8S_TEST_CONFIG"] = str(tmp / "hubflow.yaml")
    emu = K8sEmulator().start()
    os.environ["AIRFLOW_CONN_KUBERNETES_STAGING"] = emu.connection(emu.write_kubeconfig(tmp / "kubeconfig"))
    settings = load_settings(tmp / "hubflow.yaml")
    env = settings.environment("staging")
    emu.script({}, logs=["hubflow-runner: release x: deployed"], xcom={"revision": 1})
    per_pod = [pods.helm_status_pod(settings, env, f"hub{i}") for i in range(n)]
    airflow_support.run_dag(DAGS, "k8s_status_sync", conf={"pods": per_pod[:1]})  # warm-up: execution API start
    for mode in ("sync", "deferrable"):
        emu.reset()
        emu.script({}, logs=["hubflow-runner: release x: deployed"], xcom={"revision": 1})
        dag_run = airflow_support.run_dag(DAGS, f"k8s_status_{mode}", conf={"pods": per_pod})
        tis = [ti for (task, _), ti in airflow_support.task_instances(dag_run).items() if task == "pod"]
        seconds = [(ti.end_date - ti.start_date).total_seconds() for ti in tis]
        calls = Counter(f"{r.method} {'/'.join(r.path.split('/')[5::2])}{' watch' if r.query.get('watch') else ''}"
                        for r in emu.requests)
        print(f"{mode:<10} {dag_run.state}: {n} pods, per pod mean {statistics.mean(seconds):.2f}s "
              f"min {min(seconds):.2f}s max {max(seconds):.2f}s; requests per pod: "
              + ", ".join(f"{k} x{v / n:g}" for k, v in sorted(calls.items())))
    emu.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
