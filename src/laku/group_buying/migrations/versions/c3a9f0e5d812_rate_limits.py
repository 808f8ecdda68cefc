"""rate limits

Joins are limited per client address and per buyer in the kernel's rate-limit counters.

Revision ID: c3a9f0e5d812
Revises: 7c4f7a027213
Create Date: 2026-12-01 19:30:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'c3a9f0e5d812'
down_revision: Union[str, Sequence[str], None] = '7c4f7a027213'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('rate_limits',
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('hits', sa.Integer(), nullable=False),
    sa.Column('window_ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_rate_limits')),
    schema='group_buying'
    )
    op.create_index(op.f('ix_group_buying_rate_limits_window_ends_at'), 'rate_limits', ['window_ends_at'], unique=False, schema='group_buying')


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f('ix_group_buying_rate_limits_window_ends_at'), table_name='rate_limits', schema='group_buying')
    op.drop_table('rate_limits', schema='group_buying')
