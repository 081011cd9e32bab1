"""`hubflow ledger`, `hubflow hold` and `hubflow freeze` as an operator runs them (real processes, real databases)."""
import json
import os
import subprocess
import sys
from pathlib import Path

from hubflow.clients.ledger import Ledger
from tests import airflow_support

HUBFLOW = Path(sys.executable).parent / "hubflow"


def run(*args, **env):
    return subprocess.run([str(HUBFLOW), *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **env))


def test_ledger_lists_attempts_and_holds(tmp_path):
    url = f"sqlite:///{tmp_path}/ledger.db"
    book = Ledger(url)
    a = book.start("staging", "a" * 40, None, "t", "run-1")
    book.finish(a, "success", "deployed and verified on 1 hub(s)")
    b = book.start("prod", "b" * 40, None, "t", "run-2", forced_by="alice", force_reason="INC-7")
    book.finish(b, "failed", "verification failed: hub datahub: packages: numpy is not installed")
    out = run("ledger", "--ledger", url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "prod" in lines[1] and "failed" in lines[1] and "[forced by alice: INC-7]" in lines[1]
    assert "staging" in lines[2] and "success" in lines[2]
    out = run("ledger", "--env", "prod", "--json", HUBFLOW_LEDGER_URL=url)
    data = json.loads(out.stdout)
    assert [x["revision"] for x in data["attempts"]] == ["b" * 40]
    assert run("ledger", "--env", "qa", "--ledger", url).stderr.startswith("error: unknown environment 'qa'")


def test_hold_and_clear(tmp_path):
    url = f"sqlite:///{tmp_path}/ledger.db"
    sha = "c" * 40
    assert "say why" in run("hold", sha, "--ledger", url).stderr
    out = run("hold", sha, "--reason", "broke the kernels", "--ledger", url)
    assert out.returncode == 0 and Ledger(url).held(sha) == "broke the kernels"
    assert run("hold", sha, "--clear", "--ledger", url).returncode == 0 and Ledger(url).held(sha) is None
    again = run("hold", sha, "--clear", "--ledger", url)
    assert again.returncode == 2 and "is not held" in again.stderr


def test_ledger_without_a_connection_says_how_to_fix_it():
    out = run("ledger", AIRFLOW_CONN_HUBFLOW_LEDGER="")
    assert out.returncode == 2 and "pass --ledger URL or set HUBFLOW_LEDGER_URL" in out.stderr


def test_freeze_sets_and_lifts_the_switch_the_deploy_reads():
    airflow_support.migrate()
    from airflow.models import Variable

    out = run("freeze", "prod", "--reason", "exam week")
    assert out.returncode == 0, out.stderr
    assert Variable.get("hubflow_freeze_prod") == "exam week"
    assert run("freeze", "prod", "--off").returncode == 0
    assert Variable.get("hubflow_freeze_prod", default_var=None) is None
    assert "unknown environment" in run("freeze", "qa", "--reason", "x").stderr
