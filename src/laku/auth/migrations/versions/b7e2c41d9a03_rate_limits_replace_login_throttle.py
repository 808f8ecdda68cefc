"""rate limits replace the login throttle

Failed logins are counted per (account, address), per address and per account in the kernel's
rate-limit counters, as registrations are; the per-e-mail throttle goes.

Revision ID: b7e2c41d9a03
Revises: 87422bf992ab
Create Date: 2026-12-01 19:30:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'b7e2c41d9a03'
down_revision: Union[str, Sequence[str], None] = '87422bf992ab'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('rate_limits',
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('hits', sa.Integer(), nullable=False),
    sa.Column('window_ends_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_rate_limits')),
    schema='auth'
    )
    op.create_index(op.f('ix_auth_rate_limits_window_ends_at'), 'rate_limits', ['window_ends_at'], unique=False, schema='auth')
    op.drop_table('login_throttle', schema='auth')


def downgrade() -> None:
    """Downgrade schema."""
    op.create_table('login_throttle',
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('window_started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('email', name=op.f('pk_login_throttle')),
    schema='auth'
    )
    op.drop_index(op.f('ix_auth_rate_limits_window_ends_at'), table_name='rate_limits', schema='auth')
    op.drop_table('rate_limits', schema='auth')
