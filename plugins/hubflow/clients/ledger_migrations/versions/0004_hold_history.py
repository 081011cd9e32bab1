"""Holds keep who set them and who cleared them, and why: a cleared hold stays as history (cleared_at, cleared_by,
clear_reason) instead of being deleted, so one revision may have several holds over time, at most one in force.
The table gets an id key; the holds made before keep their revision, reason, environment and time (who held them
was not recorded: held_by is NULL).

Revision ID: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"

COPIED = "revision, reason, env, created_at"


def upgrade() -> None:
    op.create_table(
        "hubflow_holds_new",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("revision", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("env", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("held_by", sa.String(250)),
        sa.Column("cleared_at", sa.DateTime(timezone=True)),
        sa.Column("cleared_by", sa.String(250)),
        sa.Column("clear_reason", sa.Text),
    )
    op.execute(f"INSERT INTO hubflow_holds_new ({COPIED}) SELECT {COPIED} FROM hubflow_holds ORDER BY created_at")
    op.drop_table("hubflow_holds")
    op.rename_table("hubflow_holds_new", "hubflow_holds")
    op.create_index("ix_hubflow_holds_revision", "hubflow_holds", ["revision"])


def downgrade() -> None:
    """Back to one row per held revision: the holds in force are kept, the history of cleared ones is dropped."""
    op.create_table(
        "hubflow_holds_old",
        sa.Column("revision", sa.String(64), primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("env", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute(f"INSERT INTO hubflow_holds_old ({COPIED}) SELECT {COPIED} FROM hubflow_holds h WHERE cleared_at IS "
               "NULL AND id = (SELECT min(id) FROM hubflow_holds o WHERE o.revision = h.revision AND "
               "o.cleared_at IS NULL)")
    op.drop_index("ix_hubflow_holds_revision", "hubflow_holds")
    op.drop_table("hubflow_holds")
    op.rename_table("hubflow_holds_old", "hubflow_holds")
