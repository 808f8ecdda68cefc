"""group-buying's business figures at `/metrics`: joins, sessions by status, closes."""

from prometheus_client import Counter, Histogram

from laku.core.metrics import DatabaseGauge

CLOSES = Counter(
    "laku_group_buying_closes", "Sessions closed by this process, by outcome", ["outcome"]
)
CLOSE_SECONDS = Histogram(
    "laku_group_buying_close_duration_seconds",
    "Time to close one session: claim to outcome (refunds, releases, orders)",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0),
)

BUSINESS_METRICS = (
    DatabaseGauge(
        "laku_group_buying_participants",
        "Joins (participants) by status",
        "SELECT status, count(*) FROM group_buying.group_participants GROUP BY status",
        ("status",),
    ),
    DatabaseGauge(
        "laku_group_buying_joined_quantity",
        "Units joined by participant status",
        "SELECT status, sum(quantity) FROM group_buying.group_participants GROUP BY status",
        ("status",),
    ),
    DatabaseGauge(
        "laku_group_buying_sessions",
        "Group buys by status",
        "SELECT status, count(*) FROM group_buying.group_buying_sessions GROUP BY status",
        ("status",),
    ),
)
