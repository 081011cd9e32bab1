"""The PR preview DAG (`hubflow_pr_preview`): one comment per open PR against an environment branch.

Wiring only: the factory in plugins/hubflow/airflow/preview.py reads the settings file and nothing else.
"""
from hubflow.airflow.preview import preview_dag

hubflow_pr_preview = preview_dag()
