"""Verification leases: one smoke verification per hub and environment at a time, across the deploy and nightly
DAGs and every worker (they share the two smoke users of each hub). A row is a lease: who holds it and until when;
an expired one is anyone's.

Revision ID: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "hubflow_verification_leases",
        sa.Column("env", sa.String(64), primary_key=True),
        sa.Column("hub", sa.String(64), primary_key=True),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(500), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("hubflow_verification_leases")
