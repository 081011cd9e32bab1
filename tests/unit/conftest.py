"""Fixtures of the unit tests that need a real PostgreSQL (the ledger, the hooks' fork safety)."""
import uuid

import pytest
import sqlalchemy as sa

ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def pg_database():
    """The URL of a fresh database of the local PostgreSQL (which .ci/run starts), dropped afterwards."""
    name = f"hubflow_test_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()
