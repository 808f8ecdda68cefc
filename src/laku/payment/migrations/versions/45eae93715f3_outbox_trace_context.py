"""outbox trace context: a deferred call continues the trace that enqueued it

Revision ID: 45eae93715f3
Revises: b04ec532f1da
Create Date: 2026-12-01 16:10:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision: str = '45eae93715f3'
down_revision: Union[str, Sequence[str], None] = 'b04ec532f1da'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column(
        'outbox',
        sa.Column('trace_context', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        schema='payment',
    )


def downgrade() -> None:
    op.drop_column('outbox', 'trace_context', schema='payment')
