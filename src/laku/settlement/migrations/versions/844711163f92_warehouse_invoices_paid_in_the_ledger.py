"""warehouse invoices paid in the ledger

Revision ID: 844711163f92
Revises: f444dad0540a
Create Date: 2026-12-01 16:03:01.804930

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '844711163f92'
down_revision: Union[str, Sequence[str], None] = "f444dad0540a"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """A ledger entry may now record a warehouse invoice paid."""
    _kinds("'settlement', 'settlement_payout', 'factory_receivable', 'warehouse_invoice_paid'")


def downgrade() -> None:
    _kinds("'settlement', 'settlement_payout', 'factory_receivable'")


def _kinds(known: str) -> None:
    name = op.f("ck_transaction_ledger_kind_known")
    op.drop_constraint(name, "transaction_ledger", schema="settlement", type_="check")
    op.create_check_constraint(
        name, "transaction_ledger", f"kind IN ({known})", schema="settlement"
    )
