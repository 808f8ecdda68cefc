"""Dead letters and retention on the running services: a delivery refused for good is kept with
its reason, counted and listed for admins on every service with an outbox, and requeued by an
admin; delivered rows, old idempotency keys and rate-limit counters whose window ended are
purged by each service's periodic task while pending and dead-lettered rows stay."""

import json
import time
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from laku.testing.platform import Platform
from tests.support import admin_headers, assert_problem, eventually

OUTBOX_SCHEMAS = {
    "group-buying": "group_buying",
    "order": "order",
    "payment": "payment",
    "notification": "notification",
    "warehouse": "warehouse",
    "wallet": "wallet",
    "logistics": "logistics",
    "settlement": "settlement",
}
SUMMARY = "/api/admin/outbox"
DEAD_LETTERS = "/api/admin/outbox/dead-letters"


def _service_token(platform: Platform) -> dict[str, str]:
    return platform.service_headers("settlement")


def _summary(platform: Platform, service: str) -> dict[str, Any]:
    response = platform.client(service).get(SUMMARY, headers=admin_headers(platform))
    assert response.status_code == 200, response.text
    return response.json()


def _outbox_row(platform: Platform, schema: str, row_id: int) -> Any:
    [row] = platform.sql(f'SELECT * FROM "{schema}".outbox WHERE id = $1', row_id)
    return SimpleNamespace(**row)


@pytest.mark.parametrize("service", sorted(OUTBOX_SCHEMAS))
def test_every_service_with_an_outbox_shows_it_to_admins_only(
    platform: Platform, service: str
) -> None:
    client = platform.client(service)
    # No service reads another's outbox: a service token is refused like a buyer's.
    assert_problem(client.get(SUMMARY, headers=_service_token(platform)), 403)
    assert_problem(client.get(DEAD_LETTERS, headers=_service_token(platform)), 403)
    headers = admin_headers(platform)
    summary = client.get(SUMMARY, headers=headers)
    assert summary.status_code == 200, summary.text
    body = summary.json()
    assert set(body) == {
        "pending",
        "oldestPendingAgeSeconds",
        "deadLetters",
        "deadLettersByKind",
    }
    assert body["deadLetters"] == sum(body["deadLettersByKind"].values())
    letters = client.get(DEAD_LETTERS, params={"limit": 5}, headers=headers)
    assert letters.status_code == 200, letters.text
    assert (letters.json()["total"], letters.json()["limit"]) == (body["deadLetters"], 5)
    buyer = platform.new_buyer()
    assert_problem(client.get(SUMMARY, headers=buyer.headers), 403)
    assert_problem(client.get(DEAD_LETTERS), 401)
    assert_problem(client.post(f"{DEAD_LETTERS}/1/retry", headers=buyer.headers), 403)


@pytest.mark.parametrize("service", ["auth", "product", "factory", "address"])
def test_a_service_without_an_outbox_has_no_outbox_routes(platform: Platform, service: str) -> None:
    assert_problem(platform.client(service).get(SUMMARY, headers=admin_headers(platform)), 404)


def test_a_final_refusal_is_dead_lettered_with_its_reason_listed_and_requeued(
    platform: Platform,
) -> None:
    """group-buying expiring a payment payment-service does not know: 404 `payment_not_found`
    is final by contract, so the row is dead-lettered, not retried and not dropped."""
    client = platform.client("group-buying")
    before = _summary(platform, "group-buying")
    payload = {"paymentId": str(uuid.uuid4())}
    [(row_id,)] = platform.sql(
        "INSERT INTO group_buying.outbox (kind, payload) VALUES ('expire_payment', $1::jsonb) "
        "RETURNING id",
        json.dumps(payload),
    )
    row = eventually(
        lambda: (r := _outbox_row(platform, "group_buying", row_id)).dead_lettered_at and r
    )
    assert row, "the refused row was never dead-lettered"
    assert row.delivered_at is None and row.attempts == 1
    assert row.dead_letter_reason.startswith("404 payment_not_found"), row.dead_letter_reason

    after = _summary(platform, "group-buying")
    assert after["deadLetters"] == before["deadLetters"] + 1
    assert (
        after["deadLettersByKind"]["expire_payment"]
        == before["deadLettersByKind"].get("expire_payment", 0) + 1
    )
    page = client.get(
        DEAD_LETTERS,
        params={"kind": "expire_payment", "limit": 100},
        headers=admin_headers(platform),
    ).json()
    [listed] = [item for item in page["items"] if item["id"] == row_id]
    assert listed["kind"] == "expire_payment"
    assert listed["status"] == "dead_lettered"
    assert listed["payload"] == payload
    assert listed["attempts"] == 1
    assert listed["reason"] == row.dead_letter_reason
    assert listed["deadLetteredAt"] and listed["createdAt"] and listed["deliveredAt"] is None
    assert page["total"] == after["deadLettersByKind"]["expire_payment"]

    # Never retried by itself: past its lease and any back-off, it is still where it was.
    time.sleep(2.5)
    assert _outbox_row(platform, "group_buying", row_id).attempts == 1

    assert_problem(
        client.post(f"{DEAD_LETTERS}/{row_id}/retry", headers=_service_token(platform)), 403
    )
    requeued = client.post(f"{DEAD_LETTERS}/{row_id}/retry", headers=admin_headers(platform))
    assert requeued.status_code == 200, requeued.text
    assert (requeued.json()["status"], requeued.json()["reason"]) == ("pending", None)
    # The payment is still unknown: refused again, dead-lettered again, its attempts counted.
    again = eventually(
        lambda: (
            (r := _outbox_row(platform, "group_buying", row_id)).attempts == 2
            and r.dead_lettered_at
            and r
        )
    )
    assert again and again.dead_letter_reason.startswith("404 payment_not_found")
    assert_problem(
        client.post(f"{DEAD_LETTERS}/999999999/retry", headers=admin_headers(platform)),
        404,
        "outbox_row_not_found",
    )


def test_a_requeued_dead_letter_whose_cause_is_gone_is_delivered(platform: Platform) -> None:
    """Releasing a reservation warehouse has never heard of is nothing to do: once requeued,
    the row is delivered (an admin requeues after putting right what refused it)."""
    [(row_id,)] = platform.sql(
        "INSERT INTO group_buying.outbox "
        "(kind, payload, attempts, dead_lettered_at, dead_letter_reason, last_error) "
        "VALUES ('release_reservation', $1::jsonb, 3, now(), 'refused earlier', 'refused') "
        "RETURNING id",
        json.dumps({"reference": f"participant:{uuid.uuid4()}"}),
    )
    response = platform.client("group-buying").post(
        f"{DEAD_LETTERS}/{row_id}/retry", headers=admin_headers(platform)
    )
    assert response.status_code == 200, response.text
    assert response.json()["attempts"] == 3
    row = eventually(
        lambda: (r := _outbox_row(platform, "group_buying", row_id)).delivered_at and r
    )
    assert row, "the requeued row was never delivered"
    assert (row.dead_lettered_at, row.dead_letter_reason, row.attempts) == (None, None, 4)
    # A repeat of the requeue answers the row as it is, and changes nothing.
    repeat = platform.client("group-buying").post(
        f"{DEAD_LETTERS}/{row_id}/retry", headers=admin_headers(platform)
    )
    assert (repeat.status_code, repeat.json()["status"]) == (200, "delivered")


def test_retention_purges_what_has_expired_and_keeps_the_rest(platform: Platform) -> None:
    """order's delivered outbox rows older than 7 days, wallet's idempotency keys older than 24
    hours and auth's rate-limit counters whose window ended go; pending and dead-lettered rows,
    however old, and anything recent stay."""
    tag = uuid.uuid4().hex[:8]
    platform.sql(
        'INSERT INTO "order".outbox (kind, payload, created_at, next_attempt_at, delivered_at, '
        "dead_lettered_at, dead_letter_reason) VALUES "
        "($1, '{\"row\": \"delivered long ago\"}', now() - interval '9 days', now(), "
        " now() - interval '8 days', NULL, NULL), "
        "($1, '{\"row\": \"delivered lately\"}', now() - interval '9 days', now(), "
        " now() - interval '1 hour', NULL, NULL), "
        "($1, '{\"row\": \"pending\"}', now() - interval '9 days', now() + interval '1 year', "
        " NULL, NULL, NULL), "
        "($1, '{\"row\": \"dead letter\"}', now() - interval '9 days', now(), "
        " NULL, now() - interval '8 days', 'refused for good')",
        f"retention-test-{tag}",
    )
    platform.sql(
        "INSERT INTO wallet.idempotency_keys (scope, key, fingerprint, status_code, created_at) "
        "VALUES ($1, 'old', 'f', 200, now() - interval '25 hours'), "
        "($1, 'recent', 'f', 200, now() - interval '23 hours')",
        f"retention-test-{tag}",
    )
    platform.sql(
        "INSERT INTO auth.rate_limits (key, hits, window_ends_at) VALUES "
        "($1, 5, now() - interval '1 day'), "
        "($2, 2, now() - interval '1 minute'), "
        "($3, 5, now() + interval '15 minutes'), "
        "($4, 1, now() + interval '1 hour')",
        *(f"{name}-{tag}" for name in ("ended-long-ago", "just-ended", "locked", "counting")),
    )

    def outbox_rows() -> list[str]:
        rows = platform.sql(
            "SELECT payload->>'row' AS row FROM \"order\".outbox WHERE kind = $1 ORDER BY 1",
            f"retention-test-{tag}",
        )
        return [row["row"] for row in rows]

    def keys() -> list[str]:
        rows = platform.sql(
            "SELECT key FROM wallet.idempotency_keys WHERE scope = $1 ORDER BY 1",
            f"retention-test-{tag}",
        )
        return [row["key"] for row in rows]

    def counters() -> list[str]:
        rows = platform.sql(
            "SELECT key FROM auth.rate_limits WHERE key LIKE $1 ORDER BY 1", f"%-{tag}"
        )
        return [row["key"].removesuffix(f"-{tag}") for row in rows]

    try:
        assert eventually(lambda: "delivered long ago" not in outbox_rows()), outbox_rows()
        assert outbox_rows() == ["dead letter", "delivered lately", "pending"]
        assert eventually(lambda: keys() == ["recent"]), keys()
        assert eventually(lambda: counters() == ["counting", "locked"]), counters()
    finally:
        platform.sql('DELETE FROM "order".outbox WHERE kind = $1', f"retention-test-{tag}")
        platform.sql(
            "DELETE FROM wallet.idempotency_keys WHERE scope = $1", f"retention-test-{tag}"
        )
        platform.sql("DELETE FROM auth.rate_limits WHERE key LIKE $1", f"%-{tag}")
