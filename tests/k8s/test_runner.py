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
"""Stand-in helm: records argv, keeps a release history in $FAKE_STATE and fails the commands listed there.

A failing command first appends its `then` revisions, then prints its `error`, where {values} stands for the text of
the values files (helm's and Kubernetes' errors can quote values; the runner must not repeat them)."""
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
fail = state["fail"].get(args[0])
if fail:
    for status, description in fail.get("then", []):
        add(status, description)
    save()
    values = " ".join(open(args[i + 1]).read() for i, a in enumerate(args) if a == "--values")
    print(fail["error"].replace("{values}", values), file=sys.stderr)
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
elif args[0] == "uninstall":
    if not state["history"]:
        print(f"Error: uninstall: Release not loaded: {args[1]}: release: not found", file=sys.stderr)
        sys.exit(1)
    state["history"] = []
    save()
    print(f'release "{args[1]}" uninstalled')
'''

FAKE_SOPS = r'''#!PYTHON
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps(["sops", *sys.argv[1:]]) + "\n")
error = json.load(open(os.environ["FAKE_STATE"])).get("sops_error")
if error:
    print(error, file=sys.stderr)
    sys.exit(1)
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
        self.decrypted, self.termination_log = tmp / "decrypted", tmp / "termination-log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOPS_") and k != "XDG_CONFIG_HOME"}
        self.env = dict(env, PATH=f"{bin_dir}:{os.environ['PATH']}", HOME=str(tmp), FAKE_LOG=str(self.log),
                        FAKE_STATE=str(self.state), HUBFLOW_XCOM=str(self.xcom), HUBFLOW_DECRYPTED=str(self.decrypted),
                        HUBFLOW_TERMINATION_LOG=str(self.termination_log))
        self.set_history([])

    def set_history(self, history, fail=None, sops_error=None):
        """`fail`: {helm command: {"error": stderr text, "then": [[status, description], ...]}}."""
        self.state.write_text(json.dumps({"history": history, "fail": fail or {}, "sops_error": sops_error}))

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        self.log.write_text("")
        return subprocess.run([sys.executable, str(RUNNER), *args], env=dict(self.env, **env), capture_output=True,
                              text=True)

    def calls(self, program="helm"):
        return [c[1:] for c in map(json.loads, self.log.read_text().splitlines()) if c[0] == program]

    def result(self):
        return json.loads(self.xcom.read_text())

    def termination(self, proc) -> str:
        """The termination message; it is also the last log line, and it never holds values."""
        text = self.termination_log.read_text()
        assert text.endswith("\n") and text.count("\n") == 1
        line = text.rstrip("\n")
        assert proc.stdout.splitlines()[-1] == f"hubflow-runner: {line}"
        for value in ("decrypted-value", "client_secret", "GenericOAuthenticator", "singleuser"):
            assert value not in line
        return line


def rev(n, status="deployed", description="hubflow staging abc"):
    return {"revision": n, "updated": "2026-11-27T00:00:00Z", "status": status, "chart": "hub-0.1.0",
            "app_version": "", "description": description}


@pytest.fixture
def runner(tmp_path):
    return Runner(tmp_path)


@pytest.fixture
def upgrade_args(settings, plan, sample):
    from hubflow.k8s import pods

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
    assert not runner.termination_log.exists()


def test_first_install_reports_no_previous_revision(runner, upgrade_args):
    proc = runner(*upgrade_args)
    assert proc.returncode == 0, proc.stderr
    assert runner.result()["previous_revision"] is None
    assert runner.result()["revision"] == 1


HUB = "release datahub-staging in namespace datahub-staging"
TIMED_OUT = {"error": "Error: UPGRADE FAILED: release datahub-staging failed, and has been rolled back due to atomic "
                      "being set: context deadline exceeded",
             "then": [["failed", "Upgrade \"datahub-staging\" failed: context deadline exceeded"],
                      ["deployed", "Rollback to 1"]]}


def test_a_timed_out_upgrade_that_helm_rolled_back_says_so(runner, upgrade_args, plan):
    runner.set_history([rev(1)], fail={"upgrade": TIMED_OUT})
    proc = runner(*upgrade_args)
    assert proc.returncode == 1
    assert runner.termination(proc) == (
        f"{HUB}: helm upgrade to staging {plan.head} failed: the hub was not ready within 900s; "
        f"the upgrade failed and helm rolled the release back to revision 1 (now revision 3, deployed)")
    assert (runner.result()["previous_revision"], runner.result()["revision"]) == (1, 3)


@pytest.mark.parametrize("error, then, why, state", [
    ('Error: UPGRADE FAILED: Secret "hub" is invalid: data[x]: Invalid value: "{values}"', [["failed", "x"]],
     "Kubernetes rejected an object of the chart", "the release is now at revision 2 (failed)"),
    ("Error: UPGRADE FAILED: values don't meet the specifications of the schema(s) in the following chart(s):\n"
     "hub:\n- {values}: Invalid type", [], "the chart's schema rejected the values",
     "the release is unchanged at revision 1 (deployed)"),
    ("Error: UPGRADE FAILED: template: hub/templates/x.yaml:3: {values}", [],
     "the chart does not render with these values", "the release is unchanged at revision 1 (deployed)"),
    # a rollback helm did not do (the history says "failed" last) is never claimed
    ("Error: UPGRADE FAILED: an error occurred while rolling back the release. original upgrade error: context "
     "deadline exceeded: {values}", [["failed", "x"], ["failed", "Rollback to 1"]], "the hub was not ready within 900s",
     "the release is now at revision 3 (failed)"),
])
def test_a_failed_upgrade_says_truthfully_what_helm_left_and_never_quotes_values(runner, upgrade_args, plan, error,
                                                                                 then, why, state):
    runner.set_history([rev(1)], fail={"upgrade": {"error": error, "then": then}})
    proc = runner(*upgrade_args)
    assert proc.returncode == 1
    assert runner.termination(proc) == f"{HUB}: helm upgrade to staging {plan.head} failed: {why}; {state}"
    assert "decrypted-value" in proc.stderr  # helm's own error reaches the pod log as it is, not the message


def test_a_release_stuck_in_pending_fails_with_what_to_do(runner, upgrade_args):
    runner.set_history([rev(4, "superseded"), rev(5, "pending-upgrade")])
    proc = runner(*upgrade_args)
    assert proc.returncode == 3
    line = runner.termination(proc)
    assert line.startswith(f"{HUB}: it is stuck in pending-upgrade (helm revision 5, since 2026-11-27T00:00:00Z)")
    assert "helm rollback datahub-staging 4 --namespace datahub-staging" in line
    assert "pods.recover_pending" in line
    assert not [c for c in runner.calls() if c[0] in ("upgrade", "rollback")]


def test_a_stuck_release_is_rolled_back_first_when_recovery_is_on(runner, upgrade_args):
    runner.set_history([rev(4, "superseded"), rev(5, "pending-upgrade")])
    proc = runner(*upgrade_args, "--recover-pending")
    assert proc.returncode == 0, proc.stderr
    ops = [c[:3] for c in runner.calls() if c[0] in ("upgrade", "rollback")]
    assert ops == [["rollback", "datahub-staging", "4"], ["upgrade", "--install", "datahub-staging"]]


def test_rollback_waits_and_reports_the_new_revision(runner, settings):
    from hubflow.k8s import pods

    runner.set_history([rev(1, "superseded"), rev(2)])
    pod = pods.helm_rollback_pod(settings, settings.environment("staging"), "datahub", 1)
    proc = runner(*pod["arguments"])
    assert proc.returncode == 0, proc.stderr
    assert ["rollback", "datahub-staging", "1", "--namespace", "datahub-staging", "--wait", "--timeout",
            "900s"] in runner.calls()
    assert runner.result() == {"release": "datahub-staging", "namespace": "datahub-staging", "rolled_back_to": 1,
                               "revision": 3, "status": "deployed"}


def test_a_failed_rollback_says_where_the_release_is(runner, settings):
    from hubflow.k8s import pods

    runner.set_history([rev(1, "superseded"), rev(2)], fail={"rollback": {"error": "Error: no revision 1"}})
    proc = runner(*pods.helm_rollback_pod(settings, settings.environment("staging"), "datahub", 1)["arguments"])
    assert proc.returncode == 1
    assert runner.termination(proc) == f"{HUB}: helm rollback to revision 1 failed; the release is now at revision 2 " \
                                       f"(deployed)"


def test_status_reports_history_and_the_git_revision_without_values(runner, settings):
    from hubflow.k8s import pods

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
    from hubflow.k8s import pods

    pod = pods.helm_status_pod(settings, settings.environment("staging"), "newhub")
    assert runner(*pod["arguments"]).returncode == 0
    assert runner.result()["exists"] is False


UNREACHABLE = 'Get "https://10.0.0.1:443/version": dial tcp 10.0.0.1:443: connect: connection refused'


def test_an_unreachable_cluster_is_a_platform_fault_with_an_unknown_release_state(runner, upgrade_args):
    runner.set_history([rev(1)], fail={"history": {"error": f"Error: Kubernetes cluster unreachable: {UNREACHABLE}"}})
    proc = runner(*upgrade_args)
    assert proc.returncode == 4
    assert runner.termination(proc) == (
        f"{HUB}: cannot read the release history (Kubernetes cluster unreachable: {UNREACHABLE}); "
        f"the state of the release is unknown (its history cannot be read)")
    assert [c[0] for c in runner.calls()] == ["history"]


def test_losing_the_cluster_during_the_upgrade_is_a_platform_fault(runner, upgrade_args, plan):
    runner.set_history([rev(1)], fail={"upgrade": {"error": f"Error: UPGRADE FAILED: Kubernetes cluster unreachable: "
                                                            f"{UNREACHABLE}", "then": [["pending-upgrade", "x"]]}})
    proc = runner(*upgrade_args)
    assert proc.returncode == 4
    assert runner.termination(proc) == (f"{HUB}: the Kubernetes API cannot be reached (helm upgrade to staging "
                                        f"{plan.head}); the release is now at revision 2 (pending-upgrade)")


REPO = "https://hub.jupyter.org/helm-chart/"


@pytest.mark.parametrize("command, error, code, event", [
    ("repo", f'Error: looks like "{REPO}" is not a valid chart repository or cannot be reached: Get "{REPO}index.yaml"'
             f': dial tcp: lookup hub.jupyter.org on 10.96.0.10:53: no such host',
     4, f"chart repository {REPO} cannot be reached (helm repo add)"),
    ("dependency", f'Error: could not download {REPO}jupyterhub-4.0.0.tgz: Get "{REPO}jupyterhub-4.0.0.tgz": '
                   f'net/http: TLS handshake timeout',
     4, "a chart repository of chart hub cannot be reached (helm dependency build)"),
    ("repo", f'Error: looks like "{REPO}" is not a valid chart repository or cannot be reached: failed to fetch '
             f'{REPO}index.yaml : 404 Not Found',
     1, f"{REPO} (a dependency of chart hub) is not a chart repository (helm repo add)"),
    ("dependency", "Error: can't get a valid version for 1 subchart(s): \"jupyterhub\" (repository \"" + REPO +
                   "\", version \"99.0.0\")",
     1, "the dependencies of chart hub cannot be fetched (helm dependency build)"),
])
def test_an_unreachable_chart_repository_is_a_platform_fault_a_wrong_one_is_not(runner, upgrade_args, command,
                                                                                 error, code, event):
    runner.set_history([rev(1)], fail={command: {"error": error}})
    proc = runner(*upgrade_args)
    assert proc.returncode == code
    assert runner.termination(proc) == f"{HUB}: {event}; the release is unchanged at revision 1 (deployed)"
    assert not [c for c in runner.calls() if c[0] == "upgrade"] and not runner.calls("sops")


SECRETS = "deployments/datahub/secrets/staging.yaml"


def test_a_secrets_file_sops_cannot_get_the_key_for_is_a_platform_fault_naming_it(runner, upgrade_args):
    runner.set_history([rev(1)], sops_error="Failed to get the data key required to decrypt the SOPS file.\n\n"
                                            "Group 0: FAILED\n  projects/datahub/...: FAILED\n    - | Error "
                                            "decrypting key: google: could not find default credentials")
    proc = runner(*upgrade_args)
    assert proc.returncode == 5
    assert runner.termination(proc) == (
        f"{HUB}: cannot decrypt {SECRETS}: sops could not retrieve its data key (no key in this pod opens it, or the "
        f"key service refused or cannot be reached); the release is unchanged at revision 1 (deployed)")
    assert not [c for c in runner.calls() if c[0] == "upgrade"]


def test_a_damaged_secrets_file_is_the_revisions_fault(runner, upgrade_args):
    runner.set_history([rev(1)], sops_error="Error decrypting tree: MAC mismatch")
    proc = runner(*upgrade_args)
    assert proc.returncode == 1
    assert runner.termination(proc) == f"{HUB}: sops cannot decrypt {SECRETS}: the file is damaged (see the log); " \
                                       f"the release is unchanged at revision 1 (deployed)"


@pytest.fixture
def age_repo(tmp_path):
    """A checkout whose only secrets file is encrypted for age."""
    repo = tmp_path / "repo"
    (repo / "hub").mkdir(parents=True)
    (repo / "hub" / "Chart.yaml").write_text("apiVersion: v2\nname: hub\nversion: 0.1.0\n")
    (repo / "secrets.yaml").write_text(
        "hub:\n  password: ENC[AES256_GCM,data:eA==,iv:aXY=,tag:dGFn,type:str]\nsops:\n  kms: []\n  age:\n"
        "    - recipient: age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\n      enc: |\n"
        "        -----BEGIN AGE ENCRYPTED FILE-----\n        eA==\n        -----END AGE ENCRYPTED FILE-----\n"
        "  mac: ENC[AES256_GCM,data:bWFj,iv:aXY=,tag:dGFn,type:str]\n  version: 3.11.0\n")
    return ["upgrade", "--release", "r", "--namespace", "ns", "--chart", "hub", "--revision", "abc1234", "--env",
            "staging", "--timeout", "60s", "--values", "secrets.yaml", "--workdir", str(repo)]


def test_an_age_file_without_an_age_key_in_the_pod_fails_before_sops_runs(runner, age_repo):
    proc = runner(*age_repo)
    assert proc.returncode == 5
    assert runner.termination(proc) == (
        "release r in namespace ns: cannot decrypt secrets.yaml: it is encrypted for age and this pod has no age key "
        "(none of SOPS_AGE_KEY, SOPS_AGE_KEY_FILE, SOPS_AGE_KEY_CMD, SOPS_AGE_SSH_PRIVATE_KEY_FILE is set); "
        "the release is not installed")
    assert runner.calls("sops") == []
    key = runner.tmp / "keys.txt"
    key.write_text("AGE-SECRET-KEY-1...\n")
    proc = runner(*age_repo, SOPS_AGE_KEY_FILE=str(key))
    assert proc.returncode == 0, proc.stderr
    assert len(runner.calls("sops")) == 1


def test_a_values_file_that_is_not_yaml_is_reported_by_line_only(runner, age_repo):
    workdir = Path(age_repo[-1])
    (workdir / "secrets.yaml").write_text("hub:\n  password: decrypted-value\n  - [\n")
    proc = runner(*age_repo)
    assert proc.returncode == 1
    assert runner.termination(proc) == "release r in namespace ns: values file secrets.yaml is not valid YAML " \
                                       "(line 3); the release is not installed"


def test_an_unexpected_error_exits_1_and_says_so(runner, age_repo):
    proc = runner(*age_repo[:-1], str(runner.tmp / "no-checkout"))
    assert proc.returncode == 1
    assert runner.termination(proc) == "release r in namespace ns: the runner failed unexpectedly " \
                                       "(FileNotFoundError, see the log)"
    assert "Traceback" in proc.stderr


UNINSTALL = ["uninstall", "--release", "datahub-staging", "--namespace", "datahub-staging", "--timeout", "900s"]


def test_uninstall_waits_and_reports(runner):
    runner.set_history([rev(1)])
    proc = runner(*UNINSTALL)
    assert proc.returncode == 0, proc.stderr
    assert runner.calls() == [["uninstall", "datahub-staging", "--namespace", "datahub-staging", "--wait",
                               "--timeout", "900s"]]
    assert runner.result() == {"release": "datahub-staging", "namespace": "datahub-staging", "uninstalled": True}


def test_uninstalling_a_release_that_does_not_exist_succeeds(runner):
    proc = runner(*UNINSTALL)
    assert proc.returncode == 0, proc.stderr
    assert runner.result()["uninstalled"] is True
    assert not runner.termination_log.exists()


def test_a_failed_uninstall_says_where_the_release_is(runner):
    runner.set_history([rev(1)], fail={"uninstall": {"error": f"Error: uninstall: {UNREACHABLE}",
                                                      "then": [["uninstalling", "Deletion in progress"]]}})
    proc = runner(*UNINSTALL)
    assert proc.returncode == 4
    assert runner.termination(proc) == f"{HUB}: helm uninstall failed; the release is now at revision 2 (uninstalling)"


def test_usage_errors_exit_2_with_a_message_even_when_the_message_file_cannot_be_written(runner):
    proc = runner("upgrade", "--release", "r")
    assert proc.returncode == 2
    assert runner.termination(proc).startswith("usage: the following arguments are required: --namespace")
    proc = runner("status", HUBFLOW_TERMINATION_LOG=str(runner.tmp / "missing" / "log"))
    assert proc.returncode == 2
    assert proc.stdout.splitlines()[-1] == "hubflow-runner: usage: the following arguments are required: --release, " \
                                           "--namespace"
