"""The runner script (include/runner/hubflow-runner) with stand-in `helm` and `sops` executables on PATH.

The pod builders produce the argv; the runner turns it into helm commands. Together they fix the exact helm argv,
the order of values files and where secrets are decrypted, without a cluster.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).resolve().parents[2] / "include" / "runner" / "hubflow-runner"

FAKE_HELM = r'''#!PYTHON
"""Stand-in helm: records argv, keeps a release history in $FAKE_STATE, fails the commands listed there."""
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(["helm", *args]) + "\n")
state = json.load(open(os.environ["FAKE_STATE"]))
def save():
    json.dump(state, open(os.environ["FAKE_STATE"], "w"))
def add(status, description):
    for r in state["history"]:
        if r["status"] == "deployed":
            r["status"] = "superseded"
    state["history"].append({"revision": len(state["history"]) + 1, "updated": "2026-11-28T00:00:00Z",
                             "status": status, "chart": "hub-0.1.0", "app_version": "", "description": description})
if args[0] in state.get("fail", []):
    print(f"Error: {args[0]} failed: context deadline exceeded", file=sys.stderr)
    if args[0] == "upgrade":
        add("failed", "Upgrade failed")
        add("deployed", "Rollback to previous")
        save()
    sys.exit(1)
if args[0] == "history":
    if not state["history"]:
        print(f"Error: release: not found", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(state["history"]))
elif args[0] == "upgrade":
    add("deployed", args[args.index("--description") + 1])
    save()
    print("Release has been upgraded. Happy Helming!")
elif args[0] == "rollback":
    add("deployed", f"Rollback to {args[2]}")
    save()
    print("Rollback was a success! Happy Helming!")
'''

FAKE_SOPS = r'''#!PYTHON
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(["sops", *sys.argv[1:]]) + "\n")
out = sys.argv[sys.argv.index("--output") + 1]
open(out, "w").write("jupyterhub: {hub: {config: {GenericOAuthenticator: {client_secret: decrypted-value}}}}\n")
'''


class Runner:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        for name, text in (("helm", FAKE_HELM), ("sops", FAKE_SOPS)):
            (bin_dir / name).write_text(text.replace("PYTHON", sys.executable, 1))
            (bin_dir / name).chmod(0o755)
        self.log, self.state, self.xcom = tmp / "calls.jsonl", tmp / "state.json", tmp / "xcom" / "return.json"
        self.decrypted = tmp / "decrypted"
        self.env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_LOG=str(self.log),
                        FAKE_STATE=str(self.state), HUBFLOW_XCOM=str(self.xcom), HUBFLOW_DECRYPTED=str(self.decrypted))
        self.set_history([])

    def set_history(self, history, fail=()):
        self.state.write_text(json.dumps({"history": history, "fail": list(fail)}))

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        self.log.write_text("")
        return subprocess.run([sys.executable, str(RUNNER), *args], env=self.env, capture_output=True, text=True)

    def calls(self, program="helm"):
        return [c[1:] for c in map(json.loads, self.log.read_text().splitlines()) if c[0] == program]

    def result(self):
        return json.loads(self.xcom.read_text())


def rev(n, status="deployed", description="hubflow staging abc"):
    return {"revision": n, "updated": "2026-11-27T00:00:00Z", "status": status, "chart": "hub-0.1.0",
            "app_version": "", "description": description}


@pytest.fixture
def runner(tmp_path):
    return Runner(tmp_path)


@pytest.fixture
def upgrade_args(settings, plan, sample):
    from hubflow import pods

    pod = pods.helm_upgrade_pod(settings, settings.environment("staging"), plan, "datahub")
    return [*pod["arguments"], "--workdir", str(sample)]


def test_upgrade_runs_helm_with_values_in_order_decrypted_secrets_and_image_strings(runner, upgrade_args, plan):
    runner.set_history([rev(1, "superseded"), rev(2)])
    proc = runner(*upgrade_args)
    assert proc.returncode == 0, proc.stderr
    calls = runner.calls()
    assert calls[0][:2] == ["history", "datahub-staging"]
    assert ["repo", "add", "hubflow-dep-0", "https://hub.jupyter.org/helm-chart/", "--force-update"] in calls
    assert calls.index(["dependency", "build", "hub"]) < calls.index(next(c for c in calls if c[0] == "upgrade"))
    primary = plan.image("primary")
    upgrade = next(c for c in calls if c[0] == "upgrade")
    assert upgrade == [
        "upgrade", "--install", "datahub-staging", "hub", "--namespace", "datahub-staging",
        "--values", "deployments/datahub/config/common.yaml",
        "--values", "deployments/datahub/config/staging.yaml",
        "--values", str(runner.decrypted / "02-staging.yaml"),
        "--set-string", f"jupyterhub.singleuser.image.name={primary.repository}",
        "--set-string", f"jupyterhub.singleuser.image.tag={primary.tag}",
        "--wait", "--atomic", "--timeout", "900s", "--history-max", "10",
        "--description", f"hubflow staging {plan.head}",
    ]
    # only the sops-encrypted file goes through sops, and its plaintext never reaches the log
    assert runner.calls("sops") == [["--decrypt", "--output", str(runner.decrypted / "02-staging.yaml"),
                                     "deployments/datahub/secrets/staging.yaml"]]
    assert "decrypted-value" not in proc.stdout + proc.stderr
    assert runner.result() == {"release": "datahub-staging", "namespace": "datahub-staging", "previous_revision": 2,
                               "revision": 3, "status": "deployed", "hubflow_revision": plan.head}


def test_first_install_reports_no_previous_revision(runner, upgrade_args):
    proc = runner(*upgrade_args)
    assert proc.returncode == 0, proc.stderr
    assert runner.result()["previous_revision"] is None
    assert runner.result()["revision"] == 1


def test_a_failed_upgrade_exits_nonzero_and_says_where_the_release_is(runner, upgrade_args):
    runner.set_history([rev(1)], fail=["upgrade"])
    proc = runner(*upgrade_args)
    assert proc.returncode == 1
    assert "upgrade of datahub-staging failed; the release is now at helm revision 3 (deployed)" in proc.stdout
    assert runner.result()["previous_revision"] == 1


def test_a_release_stuck_in_pending_fails_with_what_to_do(runner, upgrade_args):
    runner.set_history([rev(4, "superseded"), rev(5, "pending-upgrade")])
    proc = runner(*upgrade_args)
    assert proc.returncode == 3
    assert "release datahub-staging in namespace datahub-staging is stuck in pending-upgrade (helm revision 5" \
        in proc.stderr
    assert "helm rollback datahub-staging 4 --namespace datahub-staging" in proc.stderr
    assert "pods.recover_pending" in proc.stderr
    assert not [c for c in runner.calls() if c[0] in ("upgrade", "rollback")]


def test_a_stuck_release_is_rolled_back_first_when_recovery_is_on(runner, upgrade_args):
    runner.set_history([rev(4, "superseded"), rev(5, "pending-upgrade")])
    proc = runner(*upgrade_args, "--recover-pending")
    assert proc.returncode == 0, proc.stderr
    ops = [c[:3] for c in runner.calls() if c[0] in ("upgrade", "rollback")]
    assert ops == [["rollback", "datahub-staging", "4"], ["upgrade", "--install", "datahub-staging"]]


def test_rollback_waits_and_reports_the_new_revision(runner, settings):
    from hubflow import pods

    runner.set_history([rev(1, "superseded"), rev(2)])
    pod = pods.helm_rollback_pod(settings, settings.environment("staging"), "datahub", 1)
    proc = runner(*pod["arguments"])
    assert proc.returncode == 0, proc.stderr
    assert ["rollback", "datahub-staging", "1", "--namespace", "datahub-staging", "--wait", "--timeout",
            "900s"] in runner.calls()
    assert runner.result() == {"release": "datahub-staging", "namespace": "datahub-staging", "rolled_back_to": 1,
                               "revision": 3, "status": "deployed"}


def test_status_reports_history_and_the_git_revision_without_values(runner, settings):
    from hubflow import pods

    runner.set_history([rev(1, "superseded"), rev(2, description="hubflow staging 0123abcd")])
    pod = pods.helm_status_pod(settings, settings.environment("staging"), "datahub")
    proc = runner(*pod["arguments"])
    assert proc.returncode == 0, proc.stderr
    assert runner.calls() == [["history", "datahub-staging", "--namespace", "datahub-staging", "--max", "10",
                               "--output", "json"]]
    result = runner.result()
    assert (result["exists"], result["revision"], result["status"], result["hubflow_revision"]) == \
        (True, 2, "deployed", "0123abcd")
    assert [r["revision"] for r in result["history"]] == [1, 2]


def test_status_of_a_missing_release(runner, settings):
    from hubflow import pods

    pod = pods.helm_status_pod(settings, settings.environment("staging"), "newhub")
    assert runner(*pod["arguments"]).returncode == 0
    assert runner.result()["exists"] is False
