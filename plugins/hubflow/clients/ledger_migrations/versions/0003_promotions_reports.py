"""Promotions (who promoted what, when, why, and how it ended) and reports (the nightly verification's summary per
environment), beside the deploy attempts.

Revision ID: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "hubflow_promotions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("target", sa.String(64), nullable=False, index=True),
        sa.Column("revision", sa.String(64), nullable=False),
        sa.Column("tree", sa.String(64)),
        sa.Column("mode", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("requested_by", sa.String(250)),
        sa.Column("run_id", sa.String(250), index=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "hubflow_reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("env", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(250)),
        sa.Column("ok", sa.Boolean, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Index("ix_hubflow_reports_kind_env", "kind", "env"),
    )


def downgrade() -> None:
    op.drop_table("hubflow_reports")
    op.drop_table("hubflow_promotions")
