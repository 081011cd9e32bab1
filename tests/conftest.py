"""Airflow reads its home and database URL when first imported: point it at a temporary home before any test
module can import it (tests/airflow_support.py explains the rest)."""
from tests import airflow_support

airflow_support.setup_environment()

