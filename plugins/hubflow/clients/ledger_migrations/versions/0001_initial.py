"""The ledger as `metadata.create_all` made it before migrations: databases made then are stamped at this revision.

Revision ID: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "hubflow_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("env", sa.String(64), nullable=False),
        sa.Column("revision", sa.String(64), nullable=False),
        sa.Column("base", sa.String(64)),
        sa.Column("tree", sa.String(64)),
        sa.Column("run_id", sa.String(250)),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("forced_by", sa.String(250)),
        sa.Column("force_reason", sa.Text),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    for column in ("env", "revision", "tree"):
        op.create_index(f"ix_hubflow_attempts_{column}", "hubflow_attempts", [column])
    op.create_table(
        "hubflow_holds",
        sa.Column("revision", sa.String(64), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("env", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("hubflow_holds")
    op.drop_table("hubflow_attempts")
