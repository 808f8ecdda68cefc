"""wallet-service's bulk credits, as payment-service refunds a closed group buy: up to 2,000
credits in one transaction, each once per idempotency key, all or nothing, with balances that
equal their ledger; concurrent batches over the same wallets neither deadlock nor double."""

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from laku.core.http import ServiceCallError, new_http_client
from laku.testing.platform import Platform, bearer
from laku.wallet.client import MovementCreate, MovementReason, WalletClient
from tests.support import assert_problem, snapshot

BULK = "/api/wallets/credits/bulk"


@pytest.fixture(scope="module")
def service_headers(platform: Platform) -> dict[str, str]:
    return platform.service_headers("payment")


def _credit(user_id: uuid.UUID | str, amount: Any = 30_000, **overrides: Any) -> dict[str, Any]:
    return {
        "userId": str(user_id),
        "amount": amount,
        "reason": "tier_refund",
        "reference": f"session:{uuid.uuid4()}:participant:{uuid.uuid4()}",
        "idempotencyKey": f"refund:{uuid.uuid4()}",
        **overrides,
    }


def _bulk(platform: Platform, headers: dict[str, str], items: list[dict]) -> httpx.Response:
    return platform.client("wallet").post(BULK, json={"items": items}, headers=headers)


def _balances(platform: Platform, users: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    rows = platform.sql(
        "SELECT user_id, balance FROM wallet.user_wallets WHERE user_id = ANY($1::uuid[])",
        users,
    )
    return {row["user_id"]: row["balance"] for row in rows}


def _ledgers(platform: Platform, users: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    rows = platform.sql(
        "SELECT user_id, sum(CASE direction WHEN 'credit' THEN amount ELSE -amount END) AS total "
        "FROM wallet.wallet_transactions WHERE user_id = ANY($1::uuid[]) GROUP BY user_id",
        users,
    )
    return {row["user_id"]: row["total"] for row in rows}


def _sums(items: list[dict[str, Any]]) -> dict[uuid.UUID, int]:
    sums: Counter[uuid.UUID] = Counter()
    for item in items:
        sums[uuid.UUID(item["userId"])] += item["amount"]
    return dict(sums)


def test_two_thousand_credits_over_three_hundred_users_in_one_call(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    users = [uuid.uuid4() for _ in range(300)]
    items = [_credit(users[i % len(users)], 1_000 + i) for i in range(2_000)]
    # Some wallets exist already (and keep what they had), the others are made by the batch.
    earlier = [_credit(user, 5_000) for user in users[:50]]
    assert _bulk(platform, service_headers, earlier).json() == {
        "credited": 50,
        "alreadyCredited": 0,
    }

    response = _bulk(platform, service_headers, items)
    assert response.status_code == 201, response.text
    assert response.json() == {"credited": 2_000, "alreadyCredited": 0}
    expected = _sums(items)
    for user in users[:50]:
        expected[user] += 5_000
    assert _balances(platform, users) == expected
    assert _ledgers(platform, users) == expected
    # Each transaction carries its own reference, and the balance after it.
    statement = platform.client("wallet").get(
        f"/api/wallets/{users[77]}/transactions", params={"limit": 100}, headers=service_headers
    )
    mine = [item for item in items if item["userId"] == str(users[77])]
    assert {t["reference"] for t in statement.json()["items"]} == {i["reference"] for i in mine}
    assert max(t["balanceAfter"] for t in statement.json()["items"]) == expected[users[77]]

    # The same call again (a retry after a lost answer) credits nothing.
    before = snapshot(platform, "wallet")
    again = _bulk(platform, service_headers, items)
    assert again.status_code == 201, again.text
    assert again.json() == {"credited": 0, "alreadyCredited": 2_000}
    assert snapshot(platform, "wallet") == before

    # Partly new: only the new ones are credited.
    more = [_credit(users[0], 700), _credit(users[299], 300)]
    assert _bulk(platform, service_headers, [*items[:10], *more]).json() == {
        "credited": 2,
        "alreadyCredited": 10,
    }
    assert _balances(platform, [users[0]])[users[0]] == expected[users[0]] + 700


def test_a_key_reused_with_another_body_refuses_the_whole_batch(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    user, other = uuid.uuid4(), uuid.uuid4()
    first = _credit(user, 10_000)
    assert _bulk(platform, service_headers, [first]).status_code == 201
    before = snapshot(platform, "wallet")
    fresh = _credit(other, 20_000)
    for reused in (
        {**first, "amount": 10_001},
        {**first, "reason": "group_failed_refund"},
        {**first, "reference": "session:other"},
        {**first, "userId": str(other)},
    ):
        refused = _bulk(platform, service_headers, [fresh, reused])
        assert_problem(refused, 409, "idempotency_key_reused")
    assert snapshot(platform, "wallet") == before
    assert _balances(platform, [user, other]) == {user: 10_000}


def test_concurrent_batches_over_the_same_wallets_credit_each_key_once(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    """Batches naming the same new wallets in opposite orders, each sent twice at once: no
    deadlock, every credit made once."""
    users = [uuid.uuid4() for _ in range(40)]
    forwards = [_credit(user, 1_000) for user in users]
    backwards = [_credit(user, 2_000) for user in reversed(users)]
    batches = [forwards, backwards, forwards, backwards]

    def send(items: list[dict]) -> httpx.Response:
        with httpx.Client(base_url=platform.url("wallet"), timeout=20.0) as client:
            return client.post(BULK, json={"items": items}, headers=service_headers)

    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(send, batches))
    assert [r.status_code for r in responses] == [201] * 4, [r.text for r in responses]
    assert sum(r.json()["credited"] for r in responses) == 80
    assert _balances(platform, users) == {user: 3_000 for user in users}
    assert _ledgers(platform, users) == {user: 3_000 for user in users}


async def test_typed_client_credits_in_bulk(platform: Platform) -> None:
    buyer = platform.new_buyer()
    user_id = uuid.UUID(buyer.id)
    items = [
        MovementCreate(
            user_id=user_id,
            amount=amount,
            reason=MovementReason.TIER_REFUND,
            reference=f"session:{uuid.uuid4()}:participant:{uuid.uuid4()}",
            idempotency_key=f"refund:{uuid.uuid4()}",
        )
        for amount in (30_000, 45_000)
    ]
    http = new_http_client(5.0)
    try:
        tokens = platform.service_token_source(http, "payment")
        wallets = WalletClient(platform.url("wallet"), http, tokens)
        first = await wallets.credit_bulk(items, idempotency_key=f"batch:{uuid.uuid4()}")
        again = await wallets.credit_bulk(items, idempotency_key=f"batch:{uuid.uuid4()}")
        changed = [items[0].model_copy(update={"amount": 1})]
        with pytest.raises(ServiceCallError) as reused:
            await wallets.credit_bulk(changed, idempotency_key=f"batch:{uuid.uuid4()}")
        wallet = await wallets.get_wallet(user_id)
    finally:
        await http.aclose()

    assert (first.credited, first.already_credited) == (2, 0)
    assert (again.credited, again.already_credited) == (0, 2)
    assert (reused.value.status, reused.value.code) == (409, "idempotency_key_reused")
    assert wallet.balance == 75_000
    me = platform.client("wallet").get("/api/wallets/me", headers=buyer.headers).json()
    assert me["balance"] == 75_000


def test_only_services_and_admins_credit(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    items = [_credit(buyer.id)]
    before = snapshot(platform, "wallet")
    assert_problem(_bulk(platform, {}, items), 401)
    assert_problem(_bulk(platform, bearer("not-a-token"), items), 401)
    assert_problem(_bulk(platform, buyer.headers, items), 403)
    assert snapshot(platform, "wallet") == before
    assert _bulk(platform, bearer(platform.admin_token), items).status_code == 201


_USER = uuid.uuid4()


@pytest.mark.parametrize(
    "items",
    [
        [],
        [_credit(_USER) for _ in range(2_001)],
        [_credit(_USER, 0)],
        [_credit(_USER, -1)],
        [_credit(_USER, 1.5)],
        [_credit(_USER, "1000")],
        [_credit(_USER, reason="withdrawal")],
        [_credit(_USER, reference="has spaces")],
        [_credit(_USER, idempotencyKey="")],
        [_credit("not-a-uuid")],
        [_credit(_USER, direction="debit")],
        [_credit(_USER, idempotencyKey="twice"), _credit(_USER, idempotencyKey="twice")],
    ],
)
def test_invalid_input_is_refused_and_changes_nothing(
    platform: Platform, service_headers: dict[str, str], items: list[dict]
) -> None:
    before = snapshot(platform, "wallet")
    assert_problem(_bulk(platform, service_headers, items), 422, "invalid_input")
    assert snapshot(platform, "wallet") == before
