"""The DAG folder imports cleanly, and importing it opens no network connection and starts no process."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# what the clients pull in and a file importing only the same providers does not (bench/topology_bench.py's parse
# row): the DAG files import the clients inside the task bodies, so parsing loads none of it (issue 11); jupyter_client
# and nbformat are the smoke client's kernel and notebook libraries. ruff's banned-module-level-imports (pyproject.toml)
# names the same libraries for the modules loaded at parse: this test checks what parsing really loads.
RUN_TIME_ONLY = {"alembic", "mako", "github", "nacl", "jwt", "docker", "jupyter_client", "nbformat"}
PARSE_TIME_CLIENTS = {"hubflow.clients", "hubflow.clients.smoke"}  # CLEANUP_SECONDS sizes a timeout

PROBE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
events = []
def hook(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn"):
        events.append(f"{event} {args[:2]!r}")
sys.addaudithook(hook)
bag = DagBag(dag_folder=sys.argv[1])
parsed = sorted(sys.modules)
dags = {d: {"tags": sorted(bag.dags[d].tags), "doc": bool(bag.dags[d].doc_md),
            "max_active_runs": bag.dags[d].max_active_runs,
            "tasks": [t.task_id for t in bag.dags[d].tasks]} for d in bag.dags}
from airflow import plugins_manager
plugins_manager.ensure_plugins_loaded()
plugin_errors = plugins_manager.get_import_errors()
shadowed = sorted(m for m in ("github", "config", "git", "plan") if m in sys.modules
                  and "plugins/hubflow" in str(getattr(sys.modules[m], "__file__", "")))
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": dags, "events": events,
                  "plugin_errors": plugin_errors, "shadowed": shadowed, "parsed": parsed}))
"""


def parse(tmp_path, config=None):
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{tmp_path}/airflow.db",
               PYTHONPATH=str(ROOT / "plugins"))
    if config:
        env["HUBFLOW_CONFIG"] = str(config)
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "dags")], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_dag_folder_imports_without_errors_or_io(tmp_path):
    result = parse(tmp_path)
    assert result["errors"] == {}
    assert result["events"] == []
    assert RUN_TIME_ONLY & {m.split(".")[0] for m in result["parsed"]} == set()
    assert {m for m in result["parsed"] if m.startswith("hubflow.clients")} == PARSE_TIME_CLIENTS


def test_plugins_folder_loads_the_library_as_a_package_only(tmp_path):
    """Airflow loads every file of plugins/ as a top-level module unless ignored: hubflow/github.py would
    become `github` and shadow PyGithub."""
    result = parse(tmp_path)
    assert result["plugin_errors"] == {}
    assert result["shadowed"] == []
    dags = result["dags"]
    assert {"hubflow_deploy_staging", "hubflow_deploy_prod"} <= set(dags)
    for dag_id, dag in dags.items():
        assert "hubflow" in dag["tags"] and dag["doc"], dag_id
    assert dags["hubflow_deploy_prod"]["max_active_runs"] == 1


def test_dags_follow_the_configured_environments(tmp_path):
    config = tmp_path / "three.yaml"
    text = (ROOT / "include" / "hubflow.yaml").read_text()
    config.write_text(text.replace("environments:\n", "environments:\n  - name: dev\n    branch: dev\n"
                                   "    hub_url: \"https://{hub}.dev.example.org\"\n", 1))
    dags = parse(tmp_path, config)["dags"]
    assert {"hubflow_deploy_dev", "hubflow_deploy_staging", "hubflow_deploy_prod"} <= set(dags)


def test_broken_settings_show_as_an_import_error_naming_the_field(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text((ROOT / "include" / "hubflow.yaml").read_text().replace("branch: prod", "branch: 'a b'"))
    errors = parse(tmp_path, config)["errors"]
    assert any("environments[1].branch" in e and "not a valid git branch name" in e for e in errors.values())
