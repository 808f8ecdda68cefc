"""wallet-service over HTTP: credits and debits once per idempotency key, balances that equal
their ledger and never go negative under concurrency, withdrawals paid out through the Xendit
sandbox (and given back when the payout fails), the payout webhook's token, access rules."""

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx
import pytest
from pydantic import SecretStr

from laku.core.http import ServiceCallError, new_http_client
from laku.providers.xendit.client import XenditError
from laku.providers.xendit.payouts import XenditPayoutClient
from laku.testing.platform import Account, Platform, bearer
from laku.wallet.client import MovementReason, WalletClient
from tests.service_logs import wait_logged
from tests.support import (
    assert_problem,
    balance,
    eventually,
    snapshot,
    wallet_transactions,
)

CREDITS = "/api/wallets/credits"
DEBITS = "/api/wallets/debits"
WITHDRAWALS = "/api/wallets/me/withdrawals"
WEBHOOK = "/api/wallets/payouts/webhook"
T = TypeVar("T")


@pytest.fixture(scope="module")
def service_headers(platform: Platform) -> dict[str, str]:
    return platform.service_headers("payment")


def _movement(user_id: str, amount: Any = 10_000, **overrides: Any) -> dict[str, Any]:
    return {
        "userId": user_id,
        "amount": amount,
        "reason": "tier_refund",
        "reference": f"session:{uuid.uuid4()}:participant:{uuid.uuid4()}",
        "idempotencyKey": f"test:{uuid.uuid4()}",
        **overrides,
    }


def _post(platform: Platform, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    return platform.client("wallet").post(path, json=body, headers=headers)


def _credit(
    platform: Platform, headers: dict[str, str], user_id: str, amount: int
) -> dict[str, Any]:
    response = _post(platform, CREDITS, _movement(user_id, amount), headers)
    assert response.status_code == 201, response.text
    return response.json()


def _ledger_sum(transactions: list[dict[str, Any]]) -> int:
    return sum(t["amount"] if t["direction"] == "credit" else -t["amount"] for t in transactions)


# Credits and debits ------------------------------------------------------------------------


def test_a_service_credits_a_buyer(platform: Platform, service_headers: dict[str, str]) -> None:
    buyer = platform.new_buyer()
    assert balance(platform, buyer) == 0  # no wallet yet: an empty one

    body = _movement(buyer.id, 30_000)
    response = _post(platform, CREDITS, body, service_headers)

    assert response.status_code == 201, response.text
    transaction = response.json()
    assert transaction["userId"] == buyer.id
    assert transaction["direction"] == "credit"
    assert transaction["amount"] == 30_000
    assert transaction["reason"] == "tier_refund"
    assert transaction["reference"] == body["reference"]
    assert transaction["balanceAfter"] == 30_000
    wallet = platform.client("wallet").get("/api/wallets/me", headers=buyer.headers).json()
    assert wallet == {"userId": buyer.id, "balance": 30_000, "currency": "IDR"}
    assert wallet_transactions(platform, buyer) == [transaction]


def test_one_idempotency_key_credits_once(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    body = _movement(buyer.id, 15_000)

    answers = [_post(platform, CREDITS, body, service_headers) for _ in range(5)]

    assert [a.status_code for a in answers] == [201, 200, 200, 200, 200]
    assert len({a.json()["id"] for a in answers}) == 1

    # Five at once: one credits, the others get its transaction.
    concurrent_body = _movement(buyer.id, 15_000)
    with ThreadPoolExecutor(5) as pool:
        answers = list(
            pool.map(
                lambda _: httpx.post(
                    platform.url("wallet") + CREDITS, json=concurrent_body, headers=service_headers
                ),
                range(5),
            )
        )
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 201]
    assert len({a.json()["id"] for a in answers}) == 1

    assert balance(platform, buyer) == 30_000
    assert len(wallet_transactions(platform, buyer)) == 2

    before = snapshot(platform, "wallet")
    other_amount = _post(platform, CREDITS, {**body, "amount": 99_000}, service_headers)
    assert_problem(other_amount, 409, "idempotency_key_reused")
    other_user = platform.new_buyer()
    other_user_body = {**body, "userId": other_user.id}
    assert_problem(
        _post(platform, CREDITS, other_user_body, service_headers), 409, "idempotency_key_reused"
    )
    as_debit = _post(platform, DEBITS, body, service_headers)
    assert_problem(as_debit, 409, "idempotency_key_reused")
    assert snapshot(platform, "wallet") == before


async def test_typed_client_credits_once_per_key(platform: Platform) -> None:
    buyer = platform.new_buyer()
    user_id = uuid.UUID(buyer.id)
    reference = f"session:{uuid.uuid4()}:participant:{uuid.uuid4()}"
    key = f"tier-refund:{uuid.uuid4()}"
    http = new_http_client(5.0)
    try:
        tokens = platform.service_token_source(http, "payment")
        wallets = WalletClient(platform.url("wallet"), http, tokens)

        first = await wallets.credit(
            user_id, 30_000, MovementReason.TIER_REFUND, reference, idempotency_key=key
        )
        again = await wallets.credit(
            user_id, 30_000, MovementReason.TIER_REFUND, reference, idempotency_key=key
        )
        with pytest.raises(ServiceCallError) as reused:
            await wallets.credit(
                user_id, 45_000, MovementReason.TIER_REFUND, reference, idempotency_key=key
            )
        wallet = await wallets.get_wallet(user_id)
        never_credited = await wallets.get_wallet(uuid.uuid4())
    finally:
        await http.aclose()

    assert again == first
    assert first.reference == reference
    assert (reused.value.status, reused.value.code) == (409, "idempotency_key_reused")
    assert wallet.balance == 30_000
    assert never_credited.balance == 0


def test_concurrent_credits_and_debits_keep_the_balance_equal_to_the_ledger(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    _credit(platform, service_headers, buyer.id, 5_000)
    movements = [
        (CREDITS, _movement(buyer.id, 1_000)) if i % 2 else (DEBITS, _movement(buyer.id, 1_500))
        for i in range(50)
    ]

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=platform.url("wallet"), timeout=30.0) as client:
            return await asyncio.gather(
                *(client.post(path, json=body, headers=service_headers) for path, body in movements)
            )

    answers = asyncio.run(send_all())

    for answer in answers:
        if answer.status_code != 201:
            assert_problem(answer, 409, "insufficient_balance")
    assert all(
        a.status_code == 201
        for (path, _), a in zip(movements, answers, strict=True)
        if path == CREDITS
    )
    refused = [a for a in answers if a.status_code == 409]
    transactions = wallet_transactions(platform, buyer)
    assert len(transactions) == 1 + 50 - len(refused)
    assert balance(platform, buyer) == _ledger_sum(transactions) >= 0
    # Applied one after another: each balance follows from the one before, never below zero.
    running = 0
    for transaction in reversed(transactions):  # oldest first
        running += transaction["amount"] * (1 if transaction["direction"] == "credit" else -1)
        assert transaction["balanceAfter"] == running >= 0


def test_a_debit_beyond_the_balance_moves_nothing(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    _credit(platform, service_headers, buyer.id, 20_000)
    never_credited = platform.new_buyer()
    before = snapshot(platform, "wallet")

    too_much = _post(
        platform, DEBITS, _movement(buyer.id, 20_001, reason="adjustment"), service_headers
    )
    from_nothing = _post(platform, DEBITS, _movement(never_credited.id, 1), service_headers)

    assert_problem(too_much, 409, "insufficient_balance")
    assert_problem(from_nothing, 409, "insufficient_balance")
    assert snapshot(platform, "wallet") == before

    admin = bearer(platform.admin_token)
    exact = _post(platform, DEBITS, _movement(buyer.id, 20_000, reason="adjustment"), admin)
    assert exact.status_code == 201, exact.text
    assert exact.json()["balanceAfter"] == 0
    assert balance(platform, buyer) == 0


# Access and input --------------------------------------------------------------------------


def test_a_buyer_sees_only_its_own_wallet(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    owner, other = platform.new_buyer(), platform.new_buyer()
    _credit(platform, service_headers, owner.id, 12_000)
    wallet = platform.client("wallet")

    assert balance(platform, other) == 0
    assert wallet_transactions(platform, other) == []
    assert_problem(wallet.get(f"/api/wallets/{owner.id}", headers=other.headers), 403)
    assert_problem(wallet.get(f"/api/wallets/{owner.id}/transactions", headers=other.headers), 403)
    assert_problem(_post(platform, CREDITS, _movement(other.id), other.headers), 403)
    assert_problem(_post(platform, DEBITS, _movement(owner.id), other.headers), 403)
    assert_problem(wallet.get("/api/wallets/me"), 401)
    assert_problem(_post(platform, CREDITS, _movement(owner.id), {}), 401)
    assert_problem(_post(platform, WITHDRAWALS, _withdrawal(10_000), {}), 401)
    # Services and admins hold no wallet of their own.
    assert_problem(wallet.get("/api/wallets/me", headers=service_headers), 403)

    as_admin = wallet.get(f"/api/wallets/{owner.id}", headers=bearer(platform.admin_token))
    assert as_admin.json()["balance"] == 12_000
    as_service = wallet.get(f"/api/wallets/{owner.id}/transactions", headers=service_headers)
    assert [t["amount"] for t in as_service.json()["items"]] == [12_000]


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 0},
        {"amount": -1},
        {"amount": 1.5},
        {"amount": "100"},
        {"amount": True},
        {"reason": "withdrawal"},  # only the withdrawal flow writes these
        {"reason": "gift"},
        {"reference": ""},
        {"reference": "has spaces"},
        {"idempotencyKey": ""},
        {"userId": "not-a-uuid"},
        {"unexpected": 1},
    ],
)
def test_invalid_movements_are_refused(
    platform: Platform, service_headers: dict[str, str], change: dict[str, Any]
) -> None:
    body = _movement(str(uuid.uuid4()), **change)
    before = snapshot(platform, "wallet")
    for path in (CREDITS, DEBITS):
        assert_problem(_post(platform, path, body, service_headers), 422)
    assert snapshot(platform, "wallet") == before


@pytest.mark.parametrize("missing", ["userId", "amount", "reason", "reference", "idempotencyKey"])
def test_movements_missing_a_field_are_refused(
    platform: Platform, service_headers: dict[str, str], missing: str
) -> None:
    body = _movement(str(uuid.uuid4()))
    del body[missing]
    before = snapshot(platform, "wallet")
    assert_problem(_post(platform, CREDITS, body, service_headers), 422)
    assert snapshot(platform, "wallet") == before


# Withdrawals -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def funded_buyer(platform: Platform, service_headers: dict[str, str]) -> Account:
    buyer = platform.new_buyer()
    _credit(platform, service_headers, buyer.id, 50_000)
    return buyer


def _withdrawal(amount: Any, **overrides: Any) -> dict[str, Any]:
    return {
        "amount": amount,
        "bankCode": "BCA",
        "accountNumber": "1234567890",
        "accountHolderName": "Siti Rahayu",
        **overrides,
    }


def test_a_withdrawal_beyond_the_balance_moves_nothing(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    _credit(platform, service_headers, buyer.id, 50_000)
    never_credited = platform.new_buyer()
    before = snapshot(platform, "wallet")

    too_much = _post(platform, WITHDRAWALS, _withdrawal(50_001), buyer.headers)
    from_nothing = _post(platform, WITHDRAWALS, _withdrawal(10_000), never_credited.headers)

    assert_problem(too_much, 409, "insufficient_balance")
    assert_problem(from_nothing, 409, "insufficient_balance")
    assert snapshot(platform, "wallet") == before
    assert balance(platform, buyer) == 50_000
    listed = platform.client("wallet").get(WITHDRAWALS, headers=buyer.headers).json()
    assert listed["items"] == []


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 0},
        {"amount": -1},
        {"amount": 1.5},
        {"amount": "100"},
        {"amount": 9_999},  # below the smallest transfer
        {"bankCode": "NOBANK"},
        {"accountNumber": "12ab"},
        {"accountHolderName": ""},
    ],
)
def test_invalid_withdrawals_are_refused(
    platform: Platform, funded_buyer: Account, change: dict[str, Any]
) -> None:
    buyer = funded_buyer
    before = snapshot(platform, "wallet")
    assert_problem(
        _post(platform, WITHDRAWALS, {**_withdrawal(20_000), **change}, buyer.headers), 422
    )
    body = _withdrawal(20_000)
    del body["accountNumber"]
    assert_problem(_post(platform, WITHDRAWALS, body, buyer.headers), 422)
    assert snapshot(platform, "wallet") == before


def _withdraw(platform: Platform, buyer: Account, amount: int) -> dict[str, Any]:
    response = _post(platform, WITHDRAWALS, _withdrawal(amount), buyer.headers)
    assert response.status_code == 201, response.text
    return response.json()


def _withdrawal_of(platform: Platform, buyer: Account, withdrawal_id: str) -> dict[str, Any]:
    response = platform.client("wallet").get(
        f"{WITHDRAWALS}/{withdrawal_id}", headers=buyer.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def _withdrawal_becomes(
    platform: Platform, buyer: Account, withdrawal_id: str, status: str, timeout: float = 10.0
) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        withdrawal = _withdrawal_of(platform, buyer, withdrawal_id)
        return withdrawal if withdrawal["status"] == status else None

    return eventually(settled, timeout=timeout)


def _requested_payout_id(platform: Platform, buyer: Account, withdrawal_id: str) -> str:
    """The Xendit payout the outbox relay requested for the withdrawal."""
    return eventually(lambda: _withdrawal_of(platform, buyer, withdrawal_id)["payoutId"])


def _sandbox_payouts(platform: Platform, reference_id: str) -> list[dict[str, Any]]:
    secret = platform.settings.xendit_secret_key.get_secret_value()
    response = platform.client("xendit-sandbox").get(
        "/v2/payouts", params={"reference_id": reference_id}, auth=(secret, "")
    )
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["has_more"] is False
    return page["data"]


def _delivered_webhooks(platform: Platform, payout_id: str) -> list[dict[str, Any]]:
    attempts = platform.client("xendit-sandbox").get(
        "/sandbox/payout-webhooks", params={"payoutId": payout_id}
    )
    return [a for a in attempts.json() if a["delivered"]]


def _reasons(platform: Platform, buyer: Account) -> list[tuple[str, str, int]]:
    """The buyer's transactions oldest first, as (direction, reason, amount)."""
    return [
        (t["direction"], t["reason"], t["amount"])
        for t in reversed(wallet_transactions(platform, buyer))
    ]


def test_a_withdrawal_is_paid_out_through_xendit(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    _credit(platform, service_headers, buyer.id, 100_000)

    withdrawal = _withdraw(platform, buyer, 40_000)

    assert withdrawal["status"] == "pending"
    assert balance(platform, buyer) == 60_000  # taken at once, not when the bank answers
    payout_id = _requested_payout_id(platform, buyer, withdrawal["id"])
    [payout] = _sandbox_payouts(platform, withdrawal["id"])
    assert payout["id"] == payout_id
    assert payout["amount"] == 40_000
    assert payout["channel_code"] == "ID_BCA"
    assert payout["channel_properties"] == {
        "account_holder_name": "Siti Rahayu",
        "account_number": "1234567890",
    }

    sandbox = platform.client("xendit-sandbox")
    assert sandbox.post(f"/sandbox/payouts/{payout_id}/succeed").status_code == 200
    eventually(lambda: _delivered_webhooks(platform, payout_id) or None)
    assert sandbox.post(f"/sandbox/payouts/{payout_id}/resend-webhook").status_code == 200
    eventually(lambda: len(_delivered_webhooks(platform, payout_id)) == 2 or None)

    assert _withdrawal_of(platform, buyer, withdrawal["id"])["status"] == "succeeded"
    assert balance(platform, buyer) == 60_000
    assert _reasons(platform, buyer) == [
        ("credit", "tier_refund", 100_000),
        ("debit", "withdrawal", 40_000),
    ]
    listed = platform.client("wallet").get(WITHDRAWALS, headers=buyer.headers).json()
    assert [w["id"] for w in listed["items"]] == [withdrawal["id"]]
    as_service = platform.client("wallet").get(
        f"/api/wallets/{buyer.id}/withdrawals", headers=service_headers
    )
    assert as_service.json()["items"] == listed["items"]
    someone_else = platform.new_buyer().headers
    not_theirs = platform.client("wallet").get(
        f"{WITHDRAWALS}/{withdrawal['id']}", headers=someone_else
    )
    assert_problem(not_theirs, 404, "withdrawal_not_found")
    # A payout the bank made cannot fail afterwards.
    assert sandbox.post(f"/sandbox/payouts/{payout_id}/fail").status_code == 409


def test_a_failed_payout_gives_the_money_back_once(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    _credit(platform, service_headers, buyer.id, 100_000)
    withdrawal = _withdraw(platform, buyer, 40_000)
    payout_id = _requested_payout_id(platform, buyer, withdrawal["id"])
    sandbox = platform.client("xendit-sandbox")

    failed = sandbox.post(
        f"/sandbox/payouts/{payout_id}/fail", params={"failureCode": "INVALID_DESTINATION"}
    )
    assert failed.status_code == 200, failed.text
    for _ in range(2):
        assert sandbox.post(f"/sandbox/payouts/{payout_id}/resend-webhook").status_code == 200
    webhooks = eventually(lambda: _delivered_webhooks(platform, payout_id)[2:] or None)

    assert webhooks[0]["event"] == "payout.failed"
    assert webhooks[0]["payload"]["data"]["failure_code"] == "INVALID_DESTINATION"
    settled = _withdrawal_of(platform, buyer, withdrawal["id"])
    assert (settled["status"], settled["failureCode"]) == ("failed", "INVALID_DESTINATION")
    assert balance(platform, buyer) == 100_000
    assert _reasons(platform, buyer) == [
        ("credit", "tier_refund", 100_000),
        ("debit", "withdrawal", 40_000),
        ("credit", "withdrawal_reversal", 40_000),
    ]
    assert sandbox.post(f"/sandbox/payouts/{payout_id}/succeed").status_code == 409


def test_the_payout_webhook_needs_xendits_callback_token(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    _credit(platform, service_headers, buyer.id, 50_000)
    withdrawal = _withdraw(platform, buyer, 50_000)
    payout_id = _requested_payout_id(platform, buyer, withdrawal["id"])
    webhook = {
        "event": "payout.failed",
        "business_id": "sandbox",
        "data": {
            "id": payout_id,
            "reference_id": withdrawal["id"],
            "status": "FAILED",
            "amount": 50_000,
            "failure_code": "INVALID_DESTINATION",
        },
    }
    token = platform.settings.xendit_callback_token.get_secret_value()
    before = snapshot(platform, "wallet")

    for headers in ({}, {"x-callback-token": "not-the-token"}, {"x-callback-token": token[:-1]}):
        assert_problem(_post(platform, WEBHOOK, webhook, headers), 401, "invalid_callback_token")
    assert_problem(_post(platform, WEBHOOK, {"event": 1}, {}), 401)
    assert snapshot(platform, "wallet") == before
    assert balance(platform, buyer) == 0

    # A payout that is not a withdrawal is acknowledged and changes nothing.
    stranger = {**webhook, "data": {**webhook["data"], "reference_id": "invoice-payout-7"}}
    assert _post(platform, WEBHOOK, stranger, {"x-callback-token": token}).status_code == 200
    assert snapshot(platform, "wallet") == before
    # With the token it is read back from Xendit, which shows the payout still ACCEPTED: the
    # event and status it claims are not believed.
    assert _post(platform, WEBHOOK, webhook, {"x-callback-token": token}).status_code == 200
    assert _withdrawal_of(platform, buyer, withdrawal["id"])["status"] == "pending"
    assert balance(platform, buyer) == 0
    wait_logged(platform, "wallet", "payout_webhook_not_confirmed", payout_id=payout_id)


def test_a_forged_payout_failed_does_not_credit_a_paid_withdrawal(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    _credit(platform, service_headers, buyer.id, 70_000)
    withdrawal = _withdraw(platform, buyer, 50_000)
    payout_id = _requested_payout_id(platform, buyer, withdrawal["id"])
    sandbox = platform.client("xendit-sandbox")
    assert sandbox.post(f"/sandbox/payouts/{payout_id}/succeed").status_code == 200
    eventually(
        lambda: _withdrawal_of(platform, buyer, withdrawal["id"])["status"] == "succeeded" or None
    )
    before = snapshot(platform, "wallet")
    token = platform.settings.xendit_callback_token.get_secret_value()
    forged = {
        "event": "payout.failed",
        "business_id": "sandbox",
        "data": {
            "id": payout_id,
            "reference_id": withdrawal["id"],
            "status": "FAILED",
            "amount": 50_000,
            "currency": "IDR",
            "failure_code": "INVALID_DESTINATION",
        },
    }
    other_payout = {**forged, "data": {**forged["data"], "id": "disb-" + "0" * 24}}
    for body in (forged, other_payout):
        response = _post(platform, WEBHOOK, body, {"x-callback-token": token})
        assert response.status_code == 200, response.text
    assert snapshot(platform, "wallet") == before
    assert balance(platform, buyer) == 20_000
    assert _withdrawal_of(platform, buyer, withdrawal["id"])["status"] == "succeeded"
    assert _reasons(platform, buyer) == [
        ("credit", "tier_refund", 70_000),
        ("debit", "withdrawal", 50_000),
    ]
    wait_logged(
        platform, "wallet", "payout_webhook_for_other_payout", payout_id=other_payout["data"]["id"]
    )


def test_a_payout_whose_webhook_is_lost_is_followed_until_it_succeeds(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    _credit(platform, service_headers, buyer.id, 30_000)
    withdrawal = _withdraw(platform, buyer, 30_000)
    payout_id = _requested_payout_id(platform, buyer, withdrawal["id"])
    sandbox = platform.client("xendit-sandbox")
    assert sandbox.post(f"/sandbox/payouts/{payout_id}/lose-webhooks").status_code == 200
    assert _withdrawal_of(platform, buyer, withdrawal["id"])["status"] == "pending"
    assert sandbox.post(f"/sandbox/payouts/{payout_id}/succeed").status_code == 200

    eventually(
        lambda: _withdrawal_of(platform, buyer, withdrawal["id"])["status"] == "succeeded" or None,
        timeout=30.0,
    )
    assert _delivered_webhooks(platform, payout_id) == []
    assert balance(platform, buyer) == 0


@pytest.mark.parametrize("outcome", ["fail", "cancel"])
def test_a_payout_that_fails_or_is_cancelled_unseen_credits_back_once(
    platform: Platform, service_headers: dict[str, str], outcome: str
) -> None:
    buyer = platform.new_buyer()
    _credit(platform, service_headers, buyer.id, 30_000)
    withdrawal = _withdraw(platform, buyer, 30_000)
    payout_id = _requested_payout_id(platform, buyer, withdrawal["id"])
    sandbox = platform.client("xendit-sandbox")
    assert sandbox.post(f"/sandbox/payouts/{payout_id}/lose-webhooks").status_code == 200
    if outcome == "fail":
        settled = sandbox.post(
            f"/sandbox/payouts/{payout_id}/fail", params={"failureCode": "REJECTED_BY_CHANNEL"}
        )
    else:  # called off at Xendit (by an operator), which sends no webhook
        secret = platform.settings.xendit_secret_key.get_secret_value()
        settled = sandbox.post(f"/v2/payouts/{payout_id}/cancel", auth=(secret, ""))
    assert settled.status_code == 200, settled.text

    failed = _withdrawal_becomes(platform, buyer, withdrawal["id"], "failed", 30.0)
    expected_code = "REJECTED_BY_CHANNEL" if outcome == "fail" else "CANCELLED"
    assert failed["failureCode"] == expected_code
    assert balance(platform, buyer) == 30_000
    assert _reasons(platform, buyer) == [
        ("credit", "tier_refund", 30_000),
        ("debit", "withdrawal", 30_000),
        ("credit", "withdrawal_reversal", 30_000),
    ]
    assert _delivered_webhooks(platform, payout_id) == []


def test_a_payout_reversed_after_it_succeeded_credits_the_wallet_back_once(
    platform: Platform, service_headers: dict[str, str]
) -> None:
    buyer = platform.new_buyer()
    _credit(platform, service_headers, buyer.id, 60_000)
    withdrawal = _withdraw(platform, buyer, 45_000)
    payout_id = _requested_payout_id(platform, buyer, withdrawal["id"])
    sandbox = platform.client("xendit-sandbox")
    assert sandbox.post(f"/sandbox/payouts/{payout_id}/succeed").status_code == 200
    eventually(
        lambda: _withdrawal_of(platform, buyer, withdrawal["id"])["status"] == "succeeded" or None
    )
    assert balance(platform, buyer) == 15_000

    reversed_ = sandbox.post(f"/sandbox/payouts/{payout_id}/reverse")
    assert reversed_.status_code == 200, reversed_.text
    assert reversed_.json()["status"] == "REVERSED"
    for _ in range(2):  # Xendit sends it again: still one credit
        assert sandbox.post(f"/sandbox/payouts/{payout_id}/resend-webhook").status_code == 200
    webhooks = eventually(lambda: _delivered_webhooks(platform, payout_id)[3:] or None)
    assert [w["event"] for w in _delivered_webhooks(platform, payout_id)] == [
        "payout.succeeded",
        "payout.reversed",
        "payout.reversed",
        "payout.reversed",
    ]
    assert webhooks
    settled = _withdrawal_of(platform, buyer, withdrawal["id"])
    assert (settled["status"], settled["failureCode"]) == ("failed", "REVERSED")
    assert balance(platform, buyer) == 60_000
    assert _reasons(platform, buyer) == [
        ("credit", "tier_refund", 60_000),
        ("debit", "withdrawal", 45_000),
        ("credit", "withdrawal_reversal", 45_000),
    ]
    # Only a payout that succeeded can be reversed.
    assert sandbox.post(f"/sandbox/payouts/{payout_id}/reverse").status_code == 200  # no change
    other = _withdraw(platform, buyer, 10_000)
    other_payout = _requested_payout_id(platform, buyer, other["id"])
    assert sandbox.post(f"/sandbox/payouts/{other_payout}/reverse").status_code == 409


async def test_payout_client_creates_one_payout_per_idempotency_key(platform: Platform) -> None:
    reference_id = str(uuid.uuid4())
    payout = {
        "reference_id": reference_id,
        "amount": 25_000,
        "channel_code": "ID_BNI",
        "account_holder_name": "Budi Santoso",
        "account_number": "9876543210",
        "description": "Laku wallet withdrawal",
        "idempotency_key": reference_id,
    }
    async with httpx.AsyncClient(timeout=5.0) as http:
        payouts = XenditPayoutClient(http, platform.settings)
        first = await payouts.create_payout(**payout)
        again = await payouts.create_payout(**payout)
        read = await payouts.get_payout(first.id)
        with pytest.raises(XenditError) as unsupported:
            await payouts.create_payout(
                **{**payout, "channel_code": "ID_NOBANK", "idempotency_key": "other-key"}
            )
        wrong_key = platform.settings.model_copy(
            update={"xendit_secret_key": SecretStr("xnd_development_wrong")}
        )
        with pytest.raises(XenditError) as unauthorized:
            await XenditPayoutClient(http, wrong_key).get_payout(first.id)

    assert (first.status, first.amount, first.reference_id) == ("ACCEPTED", 25_000, reference_id)
    assert again == first == read
    assert len(_sandbox_payouts(platform, reference_id)) == 1
    assert (unsupported.value.status, unsupported.value.error_code) == (
        400,
        "CHANNEL_CODE_NOT_SUPPORTED_ERROR",
    )
    assert (unauthorized.value.status, unauthorized.value.error_code) == (401, "INVALID_API_KEY")
