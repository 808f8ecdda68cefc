"""Telling buyers their refunds have landed in their Laku wallets.

A batch of refunds is credited by one outbox delivery (`credit_refunds`); once wallet-service
has credited it and the refunds are recorded succeeded, the same delivery tells their buyers,
in one call to notification-service (a batch holds at most MAX_REFUNDS_PER_CALL refunds, which
one call takes). Each notice is keyed by its refund, so when the delivery is retried (the
credit is then answered from the wallet's record of it) nobody is told twice, and an outage of
notification-service only delays the notices.
"""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row

from laku.core.money import format_rupiah
from laku.notification.client import (
    MAX_USER_NOTIFICATIONS_PER_CALL,
    NotificationClient,
    UserNotification,
)
from laku.payment.rules import RefundReason

_REASONS = {
    RefundReason.TIER_REFUND: "tier refund",
    RefundReason.GROUP_FAILED: "full refund, the group missed its minimum order",
    RefundReason.GROUP_CANCELLED: "full refund, the group buy was cancelled",
    RefundReason.ORDER_CANCELLED: "full refund, the order was cancelled",
    RefundReason.JOIN_FAILED: "full refund, the join could not be completed",
}
# What was paid for, as told in a notice: a batch of notices must fit in one request.
_DESCRIPTION_LENGTH = 100


def _described(description: str) -> str:
    if len(description) <= _DESCRIPTION_LENGTH:
        return description
    return description[: _DESCRIPTION_LENGTH - 1].rstrip() + "…"


async def tell_credited(
    notifications: NotificationClient, row_id: int, refunds: Sequence[Row[Any]]
) -> None:
    """Tell the buyers of a credited batch (`refunds`: their id, amount, reason, `user_id` and
    `description`; `row_id`: the `credit_refunds` outbox row's)."""
    notices = [
        UserNotification(
            user_id=refund.user_id,
            key=f"refund:{refund.id}",
            subject=f"{format_rupiah(refund.amount)} refunded to your Laku wallet",
            text=(
                f"{format_rupiah(refund.amount)} refunded to your Laku wallet "
                f"({_REASONS[RefundReason(refund.reason)]}) for "
                f"{_described(refund.description)}."
            ),
        )
        for refund in refunds
    ]
    step = MAX_USER_NOTIFICATIONS_PER_CALL
    for start in range(0, len(notices), step):
        # A refusal is the outbox's to judge: retried if it may pass, else the row is
        # dead-lettered (the credit stays made: a requeue only tells the buyers).
        await notifications.notify_users(
            notices[start : start + step], idempotency_key=f"refund-notices:{row_id}:{start}"
        )
