"""warehouse's business figures at `/metrics`: reservations."""

from laku.core.metrics import DatabaseGauge

BUSINESS_METRICS = (
    DatabaseGauge(
        "laku_warehouse_reservations",
        "Stock reservations by status (reserved, released, deducted, void)",
        "SELECT status, count(*) FROM warehouse.reservations GROUP BY status",
        ("status",),
    ),
    DatabaseGauge(
        "laku_warehouse_reserved_quantity",
        "Units in reservations by status",
        "SELECT status, sum(quantity) FROM warehouse.reservations GROUP BY status",
        ("status",),
    ),
)
