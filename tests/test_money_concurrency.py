"""Money that moves out of the platform, under concurrency and failure, over the real processes:
settlements of one factory asked for at once are made once and paid once; a settlement's payout
goes through a Xendit outage and is made once; withdrawals asked for at once, and replayed, take
no more than the balance and pay each out once.

The Xendit outage test stops the xendit-sandbox, which keeps everything in memory: it runs last
here, after every payout of this module has settled.
"""

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from laku.testing.catalog import create_seed_catalog
from laku.testing.platform import Account, Platform, bearer
from tests.settlements import (
    SETTLEMENTS,
    Group,
    assert_ledger_balanced,
    ledger_account,
    payout_id_of,
    set_payout_account,
    settlement_becomes,
    successful_group_in_period,
)
from tests.support import admin_headers, assert_problem, eventually, ok

WITHDRAWALS = "/api/wallets/me/withdrawals"


def _sandbox_payouts(platform: Platform, reference_prefix: str) -> list[dict[str, Any]]:
    payouts = ok(platform.client("xendit-sandbox").get("/sandbox/payouts"))
    return [p for p in payouts if p["reference_id"].startswith(reference_prefix)]


def _released_group(platform: Platform) -> tuple[str, Group]:
    """A fresh factory with a payout account whose group buy (one Small shirt, 1,250,000)
    released its escrow."""
    catalog = create_seed_catalog(platform, reorder_threshold=0)
    ok(set_payout_account(platform, catalog.factory_id, admin_headers(platform)))
    return catalog.factory_id, successful_group_in_period(
        platform, catalog, datetime.now(UTC), "S", 1, [1]
    )


def test_concurrent_settlements_of_one_factory_make_one_and_pay_it_once(
    platform: Platform,
) -> None:
    factory, group = _released_group(platform)
    admin = admin_headers(platform)
    url = platform.url("settlement")
    # Ten overlapping periods, each holding the release.
    bodies = [
        {
            "factoryId": factory,
            "periodStart": (group.start - timedelta(seconds=i)).isoformat(),
            "periodEnd": group.end.isoformat(),
        }
        for i in range(10)
    ]

    def settle(body: dict[str, Any]) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=60) as client:
            return client.post(
                SETTLEMENTS, json=body, headers={**admin, "Idempotency-Key": str(uuid.uuid4())}
            )

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        responses = list(pool.map(settle, bodies))

    made = [r.json() for r in responses if r.status_code == 201]
    assert len(made) == 1, [(r.status_code, r.text) for r in responses]
    for response in responses:
        if response.status_code != 201:
            assert_problem(response, 409, "settlement_period_overlaps")
    [settlement] = made
    listed = platform.client("settlement").get(
        SETTLEMENTS, params={"factoryId": factory}, headers=admin
    )
    assert [s["id"] for s in ok(listed)["items"]] == [settlement["id"]]
    assert (settlement["totalAmount"], settlement["netAmount"]) == (1_250_000, 1_187_500)

    payout_id = payout_id_of(platform, settlement["id"])
    assert [p["id"] for p in _sandbox_payouts(platform, f"settlement-{settlement['id']}")] == [
        payout_id
    ]
    ok(platform.client("xendit-sandbox").post(f"/sandbox/payouts/{payout_id}/succeed"))
    settlement_becomes(platform, settlement["id"], "paid")
    balances = assert_ledger_balanced(platform)
    assert ledger_account(balances, f"factory_payable:{factory}") == (1_187_500, 1_187_500)
    [entries] = platform.sql(
        "SELECT count(*) AS n FROM settlement.transaction_ledger WHERE settlement_id = $1",
        uuid.UUID(settlement["id"]),
    )
    assert entries["n"] == 2  # the settlement and its payout, once each


# Withdrawals --------------------------------------------------------------------------------------


def _credited_buyer(platform: Platform, amount: int) -> Account:
    buyer = platform.new_buyer()
    token = platform.service_token("payment")
    credit = platform.client("wallet").post(
        "/api/wallets/credits",
        json={
            "userId": buyer.id,
            "amount": amount,
            "reason": "order_cancelled_refund",
            "reference": f"order:{uuid.uuid4()}:cancelled",
            "idempotencyKey": f"test:{uuid.uuid4()}",
        },
        headers=bearer(token),
    )
    assert credit.status_code == 201, credit.text
    return buyer


def _withdrawal(amount: int, account_number: str = "1234567890") -> dict[str, Any]:
    return {
        "amount": amount,
        "bankCode": "BNI",
        "accountNumber": account_number,
        "accountHolderName": "Siti Rahayu",
    }


def test_concurrent_and_replayed_withdrawals_never_take_more_than_the_balance(
    platform: Platform,
) -> None:
    buyer = _credited_buyer(platform, 100_000)
    url = platform.url("wallet")
    keys = [f"withdraw:{uuid.uuid4()}" for _ in range(20)]
    # Twenty withdrawals of 30,000 with their own keys, and the first five sent twice, at once.
    requests = keys + keys[:5]

    def withdraw(key: str) -> tuple[str, httpx.Response]:
        with httpx.Client(base_url=url, timeout=60) as client:
            response = client.post(
                WITHDRAWALS,
                json=_withdrawal(30_000),
                headers={**buyer.headers, "Idempotency-Key": key},
            )
            return key, response

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        answers = list(pool.map(withdraw, requests))

    succeeded: dict[str, str] = {}  # key -> withdrawal id
    for key, response in answers:
        if response.status_code == 201:
            withdrawal_id = response.json()["id"]
            assert succeeded.setdefault(key, withdrawal_id) == withdrawal_id  # a replay: the same
        else:
            problem = assert_problem(response, 409)
            assert problem["code"] in ("insufficient_balance", "idempotency_in_progress")
    # floor(100,000 / 30,000) = 3, however the requests interleaved.
    assert len(succeeded) == 3, Counter(r.status_code for _, r in answers)
    assert len(set(succeeded.values())) == 3

    wallet = platform.client("wallet")
    assert ok(wallet.get("/api/wallets/me", headers=buyer.headers))["balance"] == 10_000
    transactions = ok(
        wallet.get("/api/wallets/me/transactions", params={"limit": 100}, headers=buyer.headers)
    )["items"]
    signed = [t["amount"] if t["direction"] == "credit" else -t["amount"] for t in transactions]
    assert sum(signed) == 10_000
    assert sorted(signed) == [-30_000, -30_000, -30_000, 100_000]
    listed = ok(wallet.get(WITHDRAWALS, params={"limit": 100}, headers=buyer.headers))["items"]
    assert sorted(w["id"] for w in listed) == sorted(succeeded.values())

    # Replayed afterwards: a withdrawal made answers itself; a refused one is refused again.
    for key in keys:
        _, again = withdraw(key)
        if key in succeeded:
            assert again.status_code == 201, again.text
            assert again.headers["idempotent-replayed"] == "true"
            assert again.json()["id"] == succeeded[key]
        else:
            assert_problem(again, 409, "insufficient_balance")
    # The same key with another body is refused.
    made_key = next(iter(succeeded))
    other = wallet.post(
        WITHDRAWALS,
        json=_withdrawal(30_000, account_number="9999999999"),
        headers={**buyer.headers, "Idempotency-Key": made_key},
    )
    assert_problem(other, 422, "idempotency_key_reused")
    assert ok(wallet.get("/api/wallets/me", headers=buyer.headers))["balance"] == 10_000

    # One payout per withdrawal in the sandbox, each of 30,000.
    sandbox = platform.client("xendit-sandbox")

    def requested() -> list[dict[str, Any]] | None:
        payouts = [p for w in succeeded.values() for p in _sandbox_payouts(platform, w)]
        return payouts if len(payouts) >= 3 else None

    assert eventually(requested, timeout=30.0)
    for withdrawal_id in succeeded.values():
        [payout] = _sandbox_payouts(platform, withdrawal_id)
        assert payout["amount"] == 30_000
        ok(sandbox.post(f"/sandbox/payouts/{payout['id']}/succeed"))

    def all_paid() -> bool:
        mine = ok(wallet.get(WITHDRAWALS, params={"limit": 100}, headers=buyer.headers))
        return all(w["status"] == "succeeded" for w in mine["items"])

    assert eventually(all_paid, timeout=30.0)
    assert ok(wallet.get("/api/wallets/me", headers=buyer.headers))["balance"] == 10_000


# A Xendit outage (last: it empties the sandbox) ---------------------------------------------------


def test_a_settlement_payout_waits_out_a_xendit_outage_and_is_paid_once(
    platform: Platform,
) -> None:
    factory, group = _released_group(platform)
    admin = admin_headers(platform)
    supervisor = platform.supervisor
    supervisor.stop("xendit-sandbox")
    try:
        created = platform.client("settlement").post(
            SETTLEMENTS,
            json=group.body(factory),
            headers={**admin, "Idempotency-Key": str(uuid.uuid4())},
        )
        settlement = ok(created, 201)
        assert settlement["status"] == "pending"

        def tried_twice() -> bool:
            [row] = platform.sql(
                "SELECT attempts, delivered_at, last_error FROM settlement.outbox "
                "WHERE kind = 'pay_out_settlement' AND payload->>'settlementId' = $1",
                settlement["id"],
            )
            return row["attempts"] >= 2 and row["delivered_at"] is None

        # The relay asks Xendit, fails, and tries again later: nothing is lost or settled.
        assert eventually(tried_twice, timeout=30.0)
        unpaid = ok(
            platform.client("settlement").get(f"{SETTLEMENTS}/{settlement['id']}", headers=admin)
        )
        assert (unpaid["status"], unpaid["payoutId"]) == ("pending", None)
    finally:
        supervisor.start_one("xendit-sandbox")
        supervisor.wait_ready()

    # Back-off has grown while Xendit was away (1 s, 2 s, 4 s ...): the next try comes later.
    payout_id = eventually(
        lambda: ok(
            platform.client("settlement").get(f"{SETTLEMENTS}/{settlement['id']}", headers=admin)
        )["payoutId"],
        timeout=120.0,
        every=0.5,
    )
    assert payout_id
    reference = f"settlement-{settlement['id']}"
    [payout] = _sandbox_payouts(platform, reference)
    assert (payout["id"], payout["reference_id"], payout["amount"]) == (
        payout_id,
        reference,
        1_187_500,
    )
    ok(platform.client("xendit-sandbox").post(f"/sandbox/payouts/{payout_id}/succeed"))
    paid = settlement_becomes(platform, settlement["id"], "paid")
    assert [e["kind"] for e in paid["ledgerEntries"]] == ["settlement", "settlement_payout"]
    assert len(_sandbox_payouts(platform, reference)) == 1
    balances = assert_ledger_balanced(platform)
    assert ledger_account(balances, f"factory_payable:{factory}") == (1_187_500, 1_187_500)
