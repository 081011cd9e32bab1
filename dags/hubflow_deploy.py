"""Deploy DAGs, one per configured environment (`hubflow_deploy_staging`, `hubflow_deploy_prod`, ...).

Wiring only: the factory in plugins/hubflow/airflow/deploy.py reads the settings file and nothing else.
"""
from hubflow.airflow.deploy import deploy_dags

globals().update(deploy_dags())
