"""payment's business figures at `/metrics`: payments, escrow, refunds (rupiah)."""

from laku.core.metrics import DatabaseGauge

BUSINESS_METRICS = (
    DatabaseGauge(
        "laku_payments",
        "Payments by status",
        "SELECT status, count(*) FROM payment.payments GROUP BY status",
        ("status",),
    ),
    DatabaseGauge(
        "laku_payment_escrow_held_rupiah",
        "Money held in escrow now (paid, not yet released or refunded), in rupiah",
        "SELECT sum(amount - refunded_amount) FROM payment.payments WHERE escrow_status = 'held'",
    ),
    DatabaseGauge(
        "laku_payment_refunds",
        "Refunds by status",
        "SELECT status, count(*) FROM payment.refunds GROUP BY status",
        ("status",),
    ),
    DatabaseGauge(
        "laku_payment_refunded_rupiah",
        "Money refunded by refund status, in rupiah",
        "SELECT status, sum(amount) FROM payment.refunds GROUP BY status",
        ("status",),
    ),
)
