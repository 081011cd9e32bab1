"""The docker builder's task body in a real Airflow run (dag.test) against podman and the authenticated registry:
the log reaches the task log, the pushed digest reaches XCom and no credential does, a tag already in the registry
is not built again, and a failing Dockerfile leaves the verdict `conclude` reads."""
from __future__ import annotations

import json
from pathlib import Path

from hubflow.clients.git import Repo
from hubflow.core.plan import make_plan
from tests import airflow_support
from tests.builder.conftest import SETTINGS, DeployRepo, manifest_digest

DAGS = Path(__file__).parent / "dags"
PASSWORD = "pw-9f1c2e"  # the auth_registry fixture's


def test_the_build_task_logs_live_records_the_digest_skips_a_built_tag_and_blames_a_bad_dockerfile(
        docker_host, auth_registry, tmp_path, monkeypatch, capfd, caplog):
    repo = DeployRepo(tmp_path / "repo", f"{auth_registry.host}/datahub/task")
    settings = tmp_path / "hubflow.yaml"
    settings.write_text(SETTINGS.replace("https://github.com/datahub/datahub.git", str(repo.path))
                        + f"    docker_host: {docker_host}\n")
    monkeypatch.setenv("HUBFLOW_BUILDER_TEST_CONFIG", str(settings))
    monkeypatch.setenv("HUBFLOW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("AIRFLOW_CONN_GITHUB_DEFAULT", json.dumps({"conn_type": "github"}))
    monkeypatch.setenv("AIRFLOW_CONN_HUBFLOW_REGISTRY", json.dumps(
        {"conn_type": "generic", "host": auth_registry.host, "login": "pusher", "password": PASSWORD}))

    def run(head: str):
        plan = make_plan(Repo(repo.path), None, head, "hubflow-fleet.yaml", ["staging"])
        conf = {"target": {"revision": head, "base": None}, "planned": {"attempt": 1, "plan": plan.to_dict()},
                "image": "hello"}
        capfd.readouterr()
        caplog.clear()
        dag_run = airflow_support.run_dag(DAGS, "docker_build", conf=conf)
        out = capfd.readouterr()
        return dag_run, plan.image("hello").tag, out.out + out.err + caplog.text

    good = repo.commit({"images/hello/Dockerfile": "FROM scratch\nCOPY hello.txt /hello.txt\n"}, "image")
    built, tag, log = run(good)
    assert built.state == "success", log[-3000:]
    result = airflow_support.xcom(built, "build")
    digest = manifest_digest(auth_registry, "datahub/task", tag, ("pusher", PASSWORD))
    assert result == {"image": "hello", "repository": repo.repository, "tag": tag, "digest": digest}
    assert "STEP 2/3: COPY hello.txt /hello.txt" in log and f"pushed {repo.repository}:{tag} ({digest})" in log
    assert PASSWORD not in log + json.dumps(result)

    again, _, log = run(good)
    assert again.state == "success"
    assert airflow_support.xcom(again, "build")["digest"] == digest
    assert f"{repo.repository}:{tag} is in the registry ({digest}): not built again" in log
    assert "STEP 1/" not in log

    bad = repo.commit({"images/hello/Dockerfile": "FROM scratch\nCOPY nope.txt /nope.txt\n"}, "bad")
    failed, tag, log = run(bad)
    assert failed.state == "failed"
    fault = airflow_support.xcom(failed, "build", key="fault")
    assert fault["blame"] == "revision" and "nope.txt" in fault["summary"]
    assert f"build hello: {fault['summary']} (revision fault)" in log
    assert manifest_digest(auth_registry, "datahub/task", tag, ("pusher", PASSWORD)) is None
