"""Real Airflow in tests: a temporary AIRFLOW_HOME per test process, migrated once, and dag.test over a dags folder.

Airflow reads AIRFLOW_HOME and its database URL when it is first imported, so `setup_environment()` must run before
anything imports airflow: call it at the top of a conftest.py (it is idempotent and cheap). Each test folder passes
its own dags folder to `run_dag`; the home and its database are shared by the whole process (one per xdist worker).

    from tests import airflow_support
    airflow_support.setup_environment()
    ...
    dag_run = airflow_support.run_dag(DAGS, "my_dag", conf={...})
    assert dag_run.state == "success"
"""
from __future__ import annotations

import atexit
import base64
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

_HOME_VAR = "HUBFLOW_TEST_AIRFLOW_HOME"
_OWNER_VAR = "HUBFLOW_TEST_AIRFLOW_HOME_OWNER"  # the xdist worker (or "main") whose home it is
_migrated = False

SETTINGS = {
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "False",
}


def setup_environment() -> Path:
    """Point Airflow at a fresh temporary home (once per test process) and return it.

    The home is kept in the environment for the `airflow`/`hubflow` commands a test starts, but only for the process
    that made it: pytest-xdist starts its workers from the controller, which loaded tests/conftest.py (and so made a
    home) first, and a worker that took that home over would share one SQLite database with the other workers.
    Each worker's first `migrate()` then copies the template over the file the others have open, and their next
    query reads "database disk image is malformed".
    """
    owner = os.environ.get("PYTEST_XDIST_WORKER", "main")
    home = os.environ.get(_HOME_VAR)
    if home and os.environ.get(_OWNER_VAR) == owner and os.environ.get("AIRFLOW_HOME") == home:
        return Path(home)
    if "airflow" in sys.modules:
        raise RuntimeError("airflow was imported before tests.airflow_support.setup_environment(); "
                           "call it at the top of the conftest.py that runs first")
    home = tempfile.mkdtemp(prefix="hubflow-airflow-")
    atexit.register(shutil.rmtree, home, True)
    os.environ[_HOME_VAR], os.environ[_OWNER_VAR] = home, owner
    os.environ["AIRFLOW_HOME"] = home
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home}/airflow.db"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(home) / "dags")
    (Path(home) / "dags").mkdir()
    os.environ.update(SETTINGS)
    # one key for this process and the `airflow`/`hubflow` commands it starts, so they read each other's Variables
    os.environ.setdefault("AIRFLOW__CORE__FERNET_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
    return Path(home)


def migrate() -> None:
    """Create the metadata database once per process.

    `airflow db migrate` takes ~12 s, so a pristine migrated database is kept in the temp folder per Airflow version
    and copied; the first process to need it migrates (in a subprocess: it is slow and noisy in-process).
    """
    global _migrated
    if _migrated:
        return
    home = setup_environment()
    template = Path(tempfile.gettempdir()) / f"hubflow-airflow-{metadata.version('apache-airflow')}.db"
    if not template.exists():
        airflow = Path(sys.executable).with_name("airflow")
        cmd = [str(airflow)] if airflow.exists() else [sys.executable, "-m", "airflow"]
        proc = subprocess.run([*cmd, "db", "migrate"], capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed in {home}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        partial = template.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(home / "airflow.db", partial)
        os.replace(partial, template)  # atomic: a concurrent process sees the whole file or none
    else:
        shutil.copyfile(template, home / "airflow.db")
    _migrated = True


def use_dags_folder(dags_folder: str | os.PathLike) -> None:
    """Make `dags_folder` the dags-folder bundle (Airflow keeps the path in airflow.settings once imported)."""
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags_folder)
    if "airflow.settings" in sys.modules:
        sys.modules["airflow.settings"].DAGS_FOLDER = str(dags_folder)


def load_dag(dags_folder: str | os.PathLike, dag_id: str):
    """The DAG `dag_id` parsed from `dags_folder`; when it is missing, the import errors say why. (Import errors
    of other files are tests/dags/test_dag_integrity.py's business.)"""
    from airflow.dag_processing.dagbag import DagBag

    use_dags_folder(dags_folder)
    bag = DagBag(dag_folder=str(dags_folder))
    if dag_id not in bag.dags:
        errors = "\n".join(f"{f}: {e}" for f, e in bag.import_errors.items())
        raise KeyError(f"no DAG {dag_id!r} in {dags_folder}; found {sorted(bag.dags)}; import errors:\n{errors}")
    return bag.dags[dag_id]


def run_dag(dags_folder: str | os.PathLike, dag_id: str, conf: dict[str, Any] | None = None, **kwargs: Any):
    """Run one DAG in-process with dag.test and return its DagRun (dag.test does not raise when tasks fail)."""
    migrate()
    dag = load_dag(dags_folder, dag_id)
    return dag.test(run_conf=conf, **kwargs)


def task_instances(dag_run) -> dict[tuple[str, int], Any]:
    """(task_id, map_index) -> task instance of a finished run."""
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = dag_run.get_task_instances(session=session)
        for ti in tis:
            session.expunge(ti)
    return {(ti.task_id, ti.map_index): ti for ti in tis}


def xcom(dag_run, task_id: str, map_index: int = -1, key: str = "return_value") -> Any:
    """A task's XCom value from the metadata database (deserialised as tasks see it)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, task_id=task_id,
                                                 map_index=map_index, key=key).one_or_none()
        return None if row is None else XComModel.deserialize_value(row)
