"""Airflow's plugin loader imports this file (plugins/.airflowignore keeps it out of the library in hubflow/)."""
from hubflow.airflow.plugin import HubflowPlugin

__all__ = ["HubflowPlugin"]
