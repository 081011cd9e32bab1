"""The nightly verification DAG (`hubflow_nightly_verify`): every hub of every environment, one report each.

Wiring only: the factory in plugins/hubflow/airflow/nightly.py reads the settings file and nothing else.
"""
from hubflow.airflow.nightly import nightly_dag

hubflow_nightly_verify = nightly_dag()
