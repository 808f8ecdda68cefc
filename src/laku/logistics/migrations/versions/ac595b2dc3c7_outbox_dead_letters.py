"""outbox dead letters

A row refused for good is dead-lettered (when, and why) instead of dropped; the relay's index
of due rows leaves dead letters out, and a small index finds them for admins.

Revision ID: ac595b2dc3c7
Revises: f991e32c1cc0
Create Date: 2026-12-01 15:51:39.506804

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "ac595b2dc3c7"
down_revision: str | Sequence[str] | None = "f991e32c1cc0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "logistics"


def upgrade() -> None:
    op.add_column(
        "outbox", sa.Column("dead_lettered_at", sa.DateTime(timezone=True)), schema=SCHEMA
    )
    op.add_column("outbox", sa.Column("dead_letter_reason", sa.Text()), schema=SCHEMA)
    op.drop_index("ix_outbox_pending", table_name="outbox", schema=SCHEMA)
    op.create_index(
        "ix_outbox_pending",
        "outbox",
        ["next_attempt_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("delivered_at IS NULL AND dead_lettered_at IS NULL"),
    )
    op.create_index(
        "ix_outbox_dead_letters",
        "outbox",
        ["dead_lettered_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("dead_lettered_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_dead_letters", table_name="outbox", schema=SCHEMA)
    op.drop_index("ix_outbox_pending", table_name="outbox", schema=SCHEMA)
    op.create_index(
        "ix_outbox_pending",
        "outbox",
        ["next_attempt_at"],
        schema=SCHEMA,
        postgresql_where=sa.text("delivered_at IS NULL"),
    )
    op.drop_column("outbox", "dead_letter_reason", schema=SCHEMA)
    op.drop_column("outbox", "dead_lettered_at", schema=SCHEMA)
