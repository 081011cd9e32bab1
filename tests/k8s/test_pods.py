"""Pod specs built by hubflow.k8s.pods: arguments, labels, secrets, resources, service accounts, and the clone
script."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess

import pytest
import yaml

LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


@pytest.fixture(scope="module")
def pods():
    from hubflow.k8s import pods

    return pods


def manifests(pods, settings, plan, env_name="staging"):
    env = settings.environment(env_name)
    per_kind = pods.deploy_pods(settings, env, plan)
    out = [pods.compose(pods.base_pod(settings, env, kind), p) for kind in ("build", "upgrade")
           for p in per_kind[kind]]
    out.append(pods.compose(pods.base_pod(settings, env, "rollback"),
                            pods.helm_rollback_pod(settings, env, "datahub", 3)))
    out.append(pods.compose(pods.base_pod(settings, env, "status"), pods.helm_status_pod(settings, env, "datahub")))
    return out


@pytest.mark.parametrize("value", [
    "datahub", "feature/new-kernel", "{{ 7 * 7 }}", "-leading-dash", "trailing.", "a" * 200, "$(rm -rf /)",
    "naïve-ünïcode", "", "___", "a b\tc\nd", "0123456789abcdef0123456789abcdef01234567",
])
def test_label_values_are_valid_for_any_input(pods, value):
    label = pods.label_value(value)
    assert len(label) <= 63 and LABEL_VALUE.fullmatch(label)
    if LABEL_VALUE.fullmatch(value) and len(value) <= 63:
        assert label == value


def test_different_hostile_values_get_different_labels(pods):
    assert pods.label_value("a/b") != pods.label_value("a:b")
    assert pods.label_value("x" * 100 + "1") != pods.label_value("x" * 100 + "2")


def test_build_pod_clones_at_the_revision_and_pushes_the_tag(pods, settings, plan):
    env = settings.environment("staging")
    pod = pods.build_pod(settings, env, plan, "primary", cache_tag="0ld7ag")
    image = plan.image("primary")
    assert pod["arguments"] == [
        "build", "--frontend", "dockerfile.v0",
        "--local", "context=/workspace/repo/images/primary",
        "--local", "dockerfile=/workspace/repo/images/primary",
        "--opt", "filename=Dockerfile",
        "--opt", f"label:org.opencontainers.image.revision={plan.head}",
        "--output", f"type=image,name={image.repository}:{image.tag},push=true",
        "--export-cache", "type=inline",
        "--import-cache", f"type=registry,ref={image.repository}:0ld7ag",
    ]
    (clone,) = pod["init_containers"]
    assert clone["command"][:2] == ["sh", "-c"] and clone["command"][3:] == [
        "clone", settings.repository.clone_url, plan.head, "/workspace/repo"]
    assert pod["labels"]["hubflow.io/image"] == "primary" and pod["labels"]["hubflow.io/tag"] == image.tag
    json.dumps(pod)  # travels through XCom


def test_prod_never_builds(pods, settings, plan):
    with pytest.raises(pods.PodSpecError, match="does not build images"):
        pods.build_pod(settings, settings.environment("prod"), plan, "primary")
    assert pods.deploy_pods(settings, settings.environment("prod"), plan)["build"] == []


def test_deploy_pods_cover_every_planned_hub_with_its_image_tags(pods, settings, plan):
    per_kind = pods.deploy_pods(settings, settings.environment("staging"), plan)
    assert sorted(p["labels"]["hubflow.io/image"] for p in per_kind["build"]) == ["datascience", "primary"]
    assert sorted(p["labels"]["hubflow.io/hub"] for p in per_kind["upgrade"]) == sorted(h.name for h in plan.hubs)
    rhub = next(p for p in per_kind["upgrade"] if p["labels"]["hubflow.io/hub"] == "rhub")
    assert "--set-string" not in rhub["arguments"]  # external image: set by its own values


def test_upgrade_pod_arguments(pods, settings, plan):
    pod = pods.helm_upgrade_pod(settings, settings.environment("prod"), plan, "biology")
    image = plan.image("datascience")
    assert pod["arguments"] == [
        "upgrade", "--release", "biology-prod", "--namespace", "biology-prod", "--chart", "hub",
        "--revision", plan.head, "--env", "prod", "--timeout", "900s", "--history-max", "10",
        "--values", "deployments/biology/config/common.yaml", "--values", "deployments/biology/config/prod.yaml",
        "--values", "deployments/biology/secrets/prod.yaml",
        "--set-string", f"jupyterhub.singleuser.image.name={image.repository}",
        "--set-string", f"jupyterhub.singleuser.image.tag={image.tag}",
    ]


def test_values_paths_that_helm_would_split_are_refused(pods, settings, plan):
    fleet = plan.fleet
    hub = fleet.hub("datahub")
    bad = hub.model_copy(update={"images": [hub.images[0].model_copy(update={"values_path": "a,b=c"})]})
    bad_plan = dataclasses.replace(plan, fleet=fleet.model_copy(update={"hubs": [bad]}))
    with pytest.raises(pods.PodSpecError, match="values_path 'a,b=c' is not valid"):
        pods.helm_upgrade_pod(settings, settings.environment("staging"), bad_plan, "datahub")


@pytest.mark.parametrize("to", [0, -1, "3", True, None])
def test_rollback_needs_a_positive_helm_revision(pods, settings, to):
    with pytest.raises(pods.PodSpecError, match="positive number"):
        pods.helm_rollback_pod(settings, settings.environment("staging"), "datahub", to)


def test_revisions_that_look_like_options_are_refused(pods, settings, plan):
    with pytest.raises(pods.PodSpecError, match="is not a git revision"):
        pods.helm_upgrade_pod(settings, settings.environment("staging"), dataclasses.replace(plan, head="--exec=x"),
                              "datahub")


def test_every_pod_has_resources_service_account_deadline_and_valid_labels(pods, settings, plan):
    for m in manifests(pods, settings, plan):
        spec = m["spec"]
        build = m["metadata"]["labels"]["hubflow.io/kind"] == "build"
        assert spec["serviceAccountName"] == ("hubflow-builder" if build else "deployer-staging")
        assert spec["restartPolicy"] == "Never"
        assert spec["activeDeadlineSeconds"] > 0
        base = spec["containers"][0]
        assert base["resources"]["requests"] and base["resources"]["limits"]
        assert base["securityContext"]["runAsNonRoot"] is True
        for key, value in m["metadata"]["labels"].items():
            assert LABEL_VALUE.fullmatch(value) and len(value) <= 63, (key, value)
    build = manifests(pods, settings, plan)[0]
    assert build["spec"]["automountServiceAccountToken"] is False  # the builder never talks to the cluster
    assert build["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "4", "memory": "8Gi"}


def test_no_secret_value_appears_in_any_manifest(pods, settings, plan, monkeypatch):
    """Credentials exist only as Kubernetes Secret references; hubflow never reads or writes their values."""
    monkeypatch.setenv("AIRFLOW_CONN_HUBFLOW_REGISTRY", json.dumps(
        {"conn_type": "generic", "host": "127.0.0.1:5000", "login": "pusher", "password": "registry-pw-51x"}))
    monkeypatch.setenv("AIRFLOW_CONN_GITHUB_DEFAULT", json.dumps({"conn_type": "github", "password": "ghp_tok3n"}))
    text = yaml.safe_dump_all(manifests(pods, settings, plan))
    for secret in ("registry-pw-51x", "ghp_tok3n", "pusher", "ENC[AES256_GCM"):
        assert secret not in text
    docs = manifests(pods, settings, plan)
    build, upgrade = docs[0], docs[2]
    clone_env = build["spec"]["initContainers"][0]["env"]
    assert {"name": "GIT_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hubflow-git", "key": "token",
                                                                "optional": True}}} in clone_env
    assert {"name": "registry", "secret": {"secretName": "hubflow-registry",
                                           "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}} \
        in build["spec"]["volumes"]
    assert upgrade["spec"]["containers"][0]["envFrom"] == [{"secretRef": {"name": "hubflow-sops", "optional": True}}]
    assert {"name": "decrypted", "emptyDir": {"medium": "Memory"}} in upgrade["spec"]["volumes"]


def test_clone_script_checks_out_the_revision_and_keeps_the_token_out_of_output(pods, settings, sample, tmp_path):
    """The init container's fixed script, run with real git against the sample origin."""
    origin = sample.parent / "origin.git"
    sha = subprocess.run(["git", "-C", str(sample), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    command = pods.clone_container(settings, sha)["command"]
    target = tmp_path / "repo"
    env = dict(os.environ, GIT_TOKEN="tok-never-printed", HOME=str(tmp_path))
    proc = subprocess.run([*command[:4], str(origin), sha, str(target)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"checked out {sha}" in proc.stdout
    assert "tok-never-printed" not in proc.stdout + proc.stderr
    assert (target / "hubflow-fleet.yaml").exists()


def test_clone_script_treats_a_hostile_revision_as_data(pods, settings, sample, tmp_path):
    origin = sample.parent / "origin.git"
    marker = tmp_path / "pwned"
    hostile = f"$(touch${{IFS}}{marker})`touch${{IFS}}{marker}`"
    command = pods.clone_container(settings, hostile)["command"]
    proc = subprocess.run([*command[:4], str(origin), hostile, str(tmp_path / "repo")], capture_output=True,
                          text=True, env=dict(os.environ, HOME=str(tmp_path)))
    assert proc.returncode != 0
    assert not marker.exists()


def test_clone_script_answers_an_auth_challenge_with_the_token_from_its_environment(pods, settings, tmp_path):
    """Git asks the credential helper only after a 401: a stand-in server records what comes back."""
    import base64
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            self.send_response(401 if len(seen) == 1 else 404)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        command = pods.clone_container(settings, "a" * 40)["command"]
        url = f"http://127.0.0.1:{server.server_address[1]}/datahub.git"
        env = dict(os.environ, GIT_TOKEN="tok-from-secret", HOME=str(tmp_path), GIT_TERMINAL_PROMPT="0")
        proc = subprocess.run([*command[:4], url, "a" * 40, str(tmp_path / "repo")], capture_output=True, text=True,
                              env=env, timeout=60)
    finally:
        server.shutdown()
    assert proc.returncode != 0  # the stand-in serves no repository
    assert seen[0] is None
    assert seen[1] == "Basic " + base64.b64encode(b"x-access-token:tok-from-secret").decode()
    assert "tok-from-secret" not in proc.stdout + proc.stderr


def test_pod_deadlines_fit_helms_worst_case(pods, settings):
    """`upgrade --wait --atomic` may wait the helm timeout for the upgrade and as long again for the rollback; a
    deadline cut shorter would kill helm mid-rollback and leave the release pending-rollback."""
    helm = settings.timeouts.helm_seconds
    env = settings.environment("staging")
    upgrade = pods.base_pod(settings, env, "upgrade")["spec"]["activeDeadlineSeconds"]
    rollback = pods.base_pod(settings, env, "rollback")["spec"]["activeDeadlineSeconds"]
    assert upgrade >= 2 * helm + settings.timeouts.pod_startup_seconds
    assert rollback >= helm + settings.timeouts.pod_startup_seconds
    recovering = settings.model_copy(update={"pods": settings.pods.model_copy(update={"recover_pending": True})})
    assert pods.base_pod(recovering, env, "upgrade")["spec"]["activeDeadlineSeconds"] >= 3 * helm
    from hubflow.airflow.operators import pod_operator_kwargs

    for kind in ("build", "upgrade", "rollback"):
        deadline = pods.base_pod(settings, env, kind)["spec"]["activeDeadlineSeconds"]
        task = pod_operator_kwargs(settings, env, kind)["execution_timeout"].total_seconds()
        assert task > deadline + settings.timeouts.pod_startup_seconds  # the task outlives its pod and reads its end


def test_undo_pods_roll_back_upgrades_and_uninstall_first_installs(pods, settings):
    env = settings.environment("staging")
    from hubflow.core.outcomes import Undo

    undo = pods.undo_pods(settings, env, [Undo("datahub", "rollback", 7), Undo("physics", "uninstall")])
    assert undo[0]["arguments"][:6] == ["rollback", "--release", "datahub-staging", "--namespace", "datahub-staging",
                                        "--to"]
    assert undo[1]["arguments"][:3] == ["uninstall", "--release", "physics-staging"]
    assert undo[1]["labels"]["hubflow.io/action"] == "uninstall"
