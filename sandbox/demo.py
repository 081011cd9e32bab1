"""The main job on local defaults: a sample deployment repository, settings that point at it, and Airflow.

Everything lives under .airflow/ in the project (delete it to start over). Airflow runs standalone on SQLite with
the project's dags/ and plugins/; open http://127.0.0.1:8080 (the admin password is printed by Airflow and kept in
.airflow/simple_auth_manager_passwords.json.generated). Stop with Ctrl-C.

    make demo
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from sandbox.sample_repo import make_sample_repo

ROOT = Path(__file__).resolve().parents[1]


def prepare(home: Path) -> dict[str, str]:
    """Create the sample repository (once) and the local settings; return the environment Airflow runs with."""
    sandbox = home / "sandbox"
    origin = sandbox / "origin.git"
    if not origin.exists():
        make_sample_repo(sandbox / "work", bare=origin)
    settings = (ROOT / "include" / "hubflow.yaml").read_text()
    settings = settings.replace("clone_url: https://github.com/datahub/datahub.git", f"clone_url: {origin}")
    (home / "hubflow.yaml").write_text(settings)
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "HUBFLOW_CONFIG": str(home / "hubflow.yaml"),
        "HUBFLOW_CACHE": str(home / "cache"),
        "AIRFLOW_CONN_HUBFLOW_LEDGER": json.dumps({"conn_type": "generic",
                                                   "extra": {"url": f"sqlite:///{home}/ledger.db"}}),
    }


def main() -> None:
    home = ROOT / ".airflow"
    home.mkdir(exist_ok=True)
    airflow = Path(sys.executable).with_name("airflow")
    env = dict(os.environ, **prepare(home), PATH=f"{airflow.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    print(f"sample deployment repository: {home / 'sandbox' / 'origin.git'}; settings: {home / 'hubflow.yaml'}")
    os.execve(str(airflow), [str(airflow), "standalone"], env)


if __name__ == "__main__":
    main()
