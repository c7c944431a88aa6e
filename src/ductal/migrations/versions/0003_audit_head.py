"""audit: the chain's head kept in a one-row table

Revision ID: 0003
Revises: 0002

On PostgreSQL every append updates this row, behind the chain's advisory lock, in the statement
that inserts the entry: its old values are the previous hash the new entry chains to.
On SQLite a trigger moves it after each insert. Either way :func:`ductal.audit.verify_chain`
compares it with the newest entry, so entries removed from the end of the trail are noticed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

GENESIS_HASH = "0" * 64


def upgrade() -> None:
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.CheckConstraint("id = 1", name="ck_audit_head_one_row"),
    )
    bind = op.get_bind()
    newest = bind.execute(
        sa.text(
            "SELECT id, prev_hash, hash, occurred_at FROM audit_entries ORDER BY id DESC LIMIT 1"
        )
    ).first()
    values = {"entry_id": 0, "prev": GENESIS_HASH, "hash": GENESIS_HASH, "at": None}
    if newest is not None:
        values = {"entry_id": newest[0], "prev": newest[1], "hash": newest[2], "at": newest[3]}
    bind.execute(
        sa.text(
            "INSERT INTO audit_head (id, entry_id, prev_hash, hash, occurred_at) "
            "VALUES (1, :entry_id, :prev, :hash, :at)"
        ),
        values,
    )
    if bind.dialect.name == "sqlite":
        op.execute(
            "CREATE TRIGGER audit_entries_move_head AFTER INSERT ON audit_entries BEGIN "
            "UPDATE audit_head SET entry_id = NEW.id, prev_hash = NEW.prev_hash, "
            "hash = NEW.hash, occurred_at = NEW.occurred_at WHERE id = 1; END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_entries_move_head")
    op.drop_table("audit_head")
