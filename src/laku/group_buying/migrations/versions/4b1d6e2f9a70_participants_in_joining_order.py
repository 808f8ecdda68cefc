"""participants in joining order

A session's participants (of a status) are read in pages in the order they joined: with the
order in the index, a page is a range of it instead of a sort of the whole session.

Revision ID: 4b1d6e2f9a70
Revises: c3a9f0e5d812
Create Date: 2026-12-02 05:20:00.000000

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = '4b1d6e2f9a70'
down_revision: Union[str, Sequence[str], None] = 'c3a9f0e5d812'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_index(
        'ix_group_participants_session_status_joined',
        'group_participants',
        ['session_id', 'status', 'created_at', 'id'],
        unique=False,
        schema='group_buying',
    )
    op.drop_index(
        'ix_group_participants_session_id_status',
        table_name='group_participants',
        schema='group_buying',
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.create_index(
        'ix_group_participants_session_id_status',
        'group_participants',
        ['session_id', 'status'],
        unique=False,
        schema='group_buying',
    )
    op.drop_index(
        'ix_group_participants_session_status_joined',
        table_name='group_participants',
        schema='group_buying',
    )
