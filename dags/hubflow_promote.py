"""The promote DAG (`hubflow_promote`): a verified revision moves to the next environment, by hand from a form.

Wiring only: the factory in plugins/hubflow/airflow/promotion.py reads the settings file and nothing else.
"""
from hubflow.airflow.promotion import promote_dags

globals().update(promote_dags())
