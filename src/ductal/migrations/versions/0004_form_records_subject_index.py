"""form_records: drop the subject index that the unique constraint already provides

Revision ID: 0004
Revises: 0003

The unique constraint on (subject_id, event_id, form_key, instance) starts with the subject, so
its index answers every lookup by subject; the separate index on subject_id only cost each
saved form one more index entry to write.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("form_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_form_records_subject_id"))


def downgrade() -> None:
    with op.batch_alter_table("form_records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_form_records_subject_id"), ["subject_id"])
