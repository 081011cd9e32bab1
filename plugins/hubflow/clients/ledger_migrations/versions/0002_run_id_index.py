"""Index attempts by run_id: every task of a run finds its attempt by it (start, attempt_for_run).

Revision ID: 0002
"""
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_index("ix_hubflow_attempts_run_id", "hubflow_attempts", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_hubflow_attempts_run_id", "hubflow_attempts")
