"""settlement-service over the real processes (seed step 10, design 9): a factory is settled for
the escrow its successful group buys released, less the platform's 5% fee, in a double-entry
ledger the database keeps balanced, and paid out through the Xendit sandbox.

The seed's example: a group buy of MOQ 4 at 1,400,000 / 1,350,000 / 1,300,000 / 1,250,000, two
buyers of 2 Small shirts each (no adjustment) paying 1,400,000 and 1,350,000 a shirt; it closes
at the 100% tier, so each gets the difference back and 4 x 1,250,000 = 5,000,000 is released to
the factory: fee 250,000, net 4,750,000.
"""

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from laku.testing.catalog import created
from laku.testing.platform import Platform, bearer
from tests.settlements import (
    PAYOUT_ACCOUNT,
    SETTLEMENTS,
    Released,
    assert_ledger_balanced,
    get_settlement,
    ledger_account,
    payout_id_of,
    post_settlement,
    set_payout_account,
    settle,
    settlement_becomes,
    settlements_client,
    successful_group,
)
from tests.support import admin_headers, assert_problem, ok, snapshot


@pytest.fixture(scope="module")
def seed_group(platform: Platform) -> Released:
    """The seed's example: 5,000,000 released."""
    return successful_group(platform, 4, [2, 2])


@pytest.fixture(scope="module")
def small_group(platform: Platform) -> Released:
    """One buyer of one shirt at 1,400,000, closed at the 100% tier: 1,250,000 released."""
    return successful_group(platform, 1, [1])


def _factory_user(platform: Platform, factory_id: str) -> dict[str, str]:
    account = {
        "email": f"factory-{uuid.uuid4().hex[:10]}@laku.id",
        "password": "factory-password",
        "name": "Staf Pabrik",
    }
    created(
        platform.client("factory").post(
            f"/api/factories/{factory_id}/users", json=account, headers=admin_headers(platform)
        )
    )
    return bearer(platform.login(account["email"], account["password"]))


def _preview(platform: Platform, released: Released, headers: dict[str, str]) -> httpx.Response:
    return settlements_client(platform).get(
        f"{SETTLEMENTS}/preview",
        params={"factoryId": released.factory_id, **released.period()},
        headers=headers,
    )


# The seed's example ------------------------------------------------------------------------------


def test_the_seed_settlement_is_booked_balanced_and_paid(
    platform: Platform, seed_group: Released
) -> None:
    admin = admin_headers(platform)
    factory = seed_group.factory_id
    payable = f"factory_payable:{factory}"

    preview = ok(_preview(platform, seed_group, admin))
    assert (preview["totalAmount"], preview["platformFee"], preview["netAmount"]) == (
        5_000_000,
        250_000,
        4_750_000,
    )
    assert (preview["feeBps"], preview["payments"]) == (500, 2)
    assert preview["sessions"] == [
        {"groupSessionId": seed_group.session_id, "amount": 5_000_000, "payments": 2}
    ]

    # Refused, each changing nothing: no payout account yet, then amounts that are not the
    # server's.
    before = snapshot(platform, "settlement")
    seed_body = seed_group.body(totalAmount=5_000_000, platformFee=250_000, netAmount=4_750_000)
    assert_problem(post_settlement(platform, seed_body, admin), 409, "no_payout_account")
    assert snapshot(platform, "settlement") == before
    account = ok(set_payout_account(platform, factory, admin))
    assert {k: account[k] for k in PAYOUT_ACCOUNT} == PAYOUT_ACCOUNT
    before = snapshot(platform, "settlement")
    for wrong in (
        {"totalAmount": 5_000_001},
        {"platformFee": 250_001},
        {"netAmount": 5_000_000},
        {"totalAmount": 5_000_000, "platformFee": 249_999, "netAmount": 4_750_001},
    ):
        body = {**seed_body, **wrong}
        mismatch = assert_problem(
            post_settlement(platform, body, admin), 409, "settlement_mismatch"
        )
        assert "the server's" in mismatch["detail"]
    assert snapshot(platform, "settlement") == before

    # Seed step 10.
    response = post_settlement(platform, seed_body, admin, key=f"settle:{factory}")
    settlement = ok(response, 201)
    assert settlement["factoryId"] == factory
    assert datetime.fromisoformat(settlement["periodStart"]) == seed_group.start
    assert datetime.fromisoformat(settlement["periodEnd"]) == seed_group.end
    assert (
        settlement["totalAmount"],
        settlement["platformFee"],
        settlement["netAmount"],
        settlement["feeBps"],
        settlement["status"],
    ) == (5_000_000, 250_000, 4_750_000, 500, "pending")
    assert settlement["sessions"] == preview["sessions"]
    [entry] = settlement["ledgerEntries"]
    assert (entry["kind"], entry["reference"]) == ("settlement", f"settlement:{settlement['id']}")
    assert sorted((line["account"], line["debit"], line["credit"]) for line in entry["lines"]) == [
        ("escrow_released", 5_000_000, 0),
        (payable, 0, 4_750_000),
        ("platform_fee_revenue", 0, 250_000),
    ]
    balances = assert_ledger_balanced(platform)
    assert ledger_account(balances, payable) == (0, 4_750_000)

    # The same key and body again answer the first response; nothing is settled twice.
    replay = post_settlement(platform, seed_body, admin, key=f"settle:{factory}")
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == settlement["id"]
    page = ok(
        settlements_client(platform).get(SETTLEMENTS, params={"factoryId": factory}, headers=admin)
    )
    assert [item["id"] for item in page["items"]] == [settlement["id"]]

    # The payout: requested from Xendit with the settlement's reference, to the factory's bank.
    payout_id = payout_id_of(platform, settlement["id"])
    sandbox = platform.client("xendit-sandbox")
    [payout] = [p for p in ok(sandbox.get("/sandbox/payouts")) if p["id"] == payout_id]
    assert (payout["reference_id"], payout["amount"], payout["channel_code"]) == (
        f"settlement-{settlement['id']}",
        4_750_000,
        "ID_BCA",
    )
    assert payout["channel_properties"] == {
        "account_holder_name": PAYOUT_ACCOUNT["accountHolderName"],
        "account_number": PAYOUT_ACCOUNT["accountNumber"],
    }
    assert payout["status"] == "ACCEPTED"
    assert ok(get_settlement(platform, settlement["id"], admin))["status"] == "pending"

    ok(sandbox.post(f"/sandbox/payouts/{payout_id}/succeed"))
    paid = settlement_becomes(platform, settlement["id"], "paid")
    assert paid["paidAt"] is not None
    assert [e["kind"] for e in paid["ledgerEntries"]] == ["settlement", "settlement_payout"]
    payout_entry = paid["ledgerEntries"][1]
    assert payout_entry["reference"] == f"settlement:{settlement['id']}:payout"
    assert sorted(
        (line["account"], line["debit"], line["credit"]) for line in payout_entry["lines"]
    ) == [
        ("cash_xendit", 0, 4_750_000),
        (payable, 4_750_000, 0),
    ]
    balances = assert_ledger_balanced(platform)
    assert ledger_account(balances, payable) == (4_750_000, 4_750_000)  # nothing owed any more
    # Only one payout was made for it.
    made = [
        p
        for p in ok(sandbox.get("/sandbox/payouts"))
        if p["reference_id"] == payout["reference_id"]
    ]
    assert len(made) == 1

    # Nothing is settled twice: a period overlapping this one is refused, whatever its bounds.
    before = snapshot(platform, "settlement")
    for start, end in (
        (seed_group.start - timedelta(days=30), seed_group.start + timedelta(seconds=1)),
        (seed_group.end - timedelta(seconds=1), datetime.now(UTC)),
        (seed_group.start + timedelta(microseconds=1), seed_group.end - timedelta(microseconds=1)),
        (seed_group.start - timedelta(days=1), datetime.now(UTC)),
    ):
        overlapping = {
            "factoryId": factory,
            "periodStart": start.isoformat(),
            "periodEnd": end.isoformat(),
        }
        assert_problem(
            post_settlement(platform, overlapping, admin), 409, "settlement_period_overlaps"
        )
    # The next period begins where this one ended ([start, end)): nothing was released in it.
    after = {
        "factoryId": factory,
        "periodStart": seed_group.end.isoformat(),
        "periodEnd": datetime.now(UTC).isoformat(),
    }
    assert_problem(post_settlement(platform, after, admin), 409, "nothing_to_settle")
    assert snapshot(platform, "settlement") == before


def test_a_failed_payout_leaves_the_factory_owed(platform: Platform, small_group: Released) -> None:
    settlement = settle(platform, small_group)
    assert (settlement["totalAmount"], settlement["platformFee"], settlement["netAmount"]) == (
        1_250_000,
        62_500,
        1_187_500,
    )
    payout_id = payout_id_of(platform, settlement["id"])
    failed = platform.client("xendit-sandbox").post(
        f"/sandbox/payouts/{payout_id}/fail", params={"failureCode": "INVALID_DESTINATION"}
    )
    ok(failed)
    settled = settlement_becomes(platform, settlement["id"], "payout_failed")
    assert (settled["payoutFailureCode"], settled["paidAt"]) == ("INVALID_DESTINATION", None)
    assert [e["kind"] for e in settled["ledgerEntries"]] == ["settlement"]
    balances = assert_ledger_balanced(platform)
    assert ledger_account(balances, f"factory_payable:{small_group.factory_id}") == (0, 1_187_500)
    failed_page = ok(
        settlements_client(platform).get(
            SETTLEMENTS,
            params={"factoryId": small_group.factory_id, "status": "payout_failed"},
            headers=admin_headers(platform),
        )
    )
    assert [item["id"] for item in failed_page["items"]] == [settlement["id"]]


# Who may do what ---------------------------------------------------------------------------------


def test_a_factory_sees_its_own_and_buyers_and_strangers_nothing(platform: Platform) -> None:
    # Groups of their own: the seed's and the small group are settled by the tests above, in
    # whichever order the tests run.
    seed_group = successful_group(platform, 4, [2, 2])
    small_group = successful_group(platform, 1, [1])
    own = settle(platform, seed_group)
    other = settle(platform, small_group)
    factory = _factory_user(platform, seed_group.factory_id)
    settlements = settlements_client(platform)

    page = ok(settlements.get(SETTLEMENTS, headers=factory))
    assert [item["id"] for item in page["items"]] == [own["id"]]
    assert ok(get_settlement(platform, own["id"], factory))["id"] == own["id"]
    assert ok(_preview(platform, seed_group, factory))["totalAmount"] == 5_000_000
    account = settlements.get(
        f"{SETTLEMENTS}/payout-accounts/{seed_group.factory_id}", headers=factory
    )
    assert ok(account)["accountNumber"] == PAYOUT_ACCOUNT["accountNumber"]

    assert_problem(get_settlement(platform, other["id"], factory), 404, "settlement_not_found")
    assert_problem(
        settlements.get(SETTLEMENTS, params={"factoryId": small_group.factory_id}, headers=factory),
        403,
    )
    assert_problem(_preview(platform, small_group, factory), 403)
    assert_problem(
        settlements.get(f"{SETTLEMENTS}/payout-accounts/{small_group.factory_id}", headers=factory),
        403,
    )

    buyer = platform.new_buyer().headers
    before = snapshot(platform, "settlement")
    for headers, status in ((factory, 403), (buyer, 403), ({}, 401), (bearer("not-a-token"), 401)):
        assert_problem(post_settlement(platform, seed_group.body(), headers), status)
        assert_problem(set_payout_account(platform, seed_group.factory_id, headers), status)
        assert_problem(settlements.get("/api/ledger/balances", headers=headers), status)
    for headers, status in ((buyer, 403), ({}, 401)):
        assert_problem(settlements.get(SETTLEMENTS, headers=headers), status)
        assert_problem(get_settlement(platform, own["id"], headers), status)
        assert_problem(_preview(platform, seed_group, headers), status)
    assert snapshot(platform, "settlement") == before

    # Admins see everyone's, and may narrow to one factory.
    everything = ok(
        settlements.get(SETTLEMENTS, params={"limit": 100}, headers=admin_headers(platform))
    )
    assert {own["id"], other["id"]} <= {item["id"] for item in everything["items"]}


# Refusals --------------------------------------------------------------------------------------


def test_invalid_settlements_are_refused_and_change_nothing(platform: Platform) -> None:
    admin = admin_headers(platform)
    factory = created(
        platform.client("factory").post(
            "/api/factories",
            json={
                "name": f"Konveksi Sepi {uuid.uuid4().hex[:6]}",
                "ownerName": "Siti",
                "phone": "+6281298765432",
                "address": "Jl. Sepi 1, Bandung",
                "postalCode": "40111",
            },
            headers=admin,
        )
    )["id"]
    month = {"periodStart": "2025-11-01T00:00:00Z", "periodEnd": "2025-12-01T00:00:00Z"}
    before = snapshot(platform, "settlement")
    assert_problem(
        post_settlement(platform, {"factoryId": factory, **month}, admin), 409, "no_payout_account"
    )
    missing = str(uuid.uuid4())
    assert_problem(
        post_settlement(platform, {"factoryId": missing, **month}, admin), 422, "unknown_factory"
    )
    assert_problem(set_payout_account(platform, missing, admin), 422, "unknown_factory")
    unknown_preview = settlements_client(platform).get(
        f"{SETTLEMENTS}/preview", params={"factoryId": missing, **month}, headers=admin
    )
    assert_problem(unknown_preview, 422, "unknown_factory")
    for fields in ({"bankCode": "NOBANK"}, {"accountNumber": "12ab"}, {"accountHolderName": ""}):
        assert_problem(set_payout_account(platform, factory, admin, **fields), 422, "invalid_input")
    assert snapshot(platform, "settlement") == before

    ok(set_payout_account(platform, factory, admin))
    before = snapshot(platform, "settlement")
    assert_problem(
        post_settlement(platform, {"factoryId": factory, **month}, admin), 409, "nothing_to_settle"
    )
    future = {**month, "periodEnd": (datetime.now(UTC) + timedelta(days=1)).isoformat()}
    assert_problem(
        post_settlement(platform, {"factoryId": factory, **future}, admin), 422, "period_not_ended"
    )
    for body in (
        {
            "factoryId": factory,
            "periodStart": month["periodEnd"],
            "periodEnd": month["periodStart"],
        },
        {
            "factoryId": factory,
            "periodStart": month["periodStart"],
            "periodEnd": month["periodStart"],
        },
        {
            "factoryId": factory,
            "periodStart": "2025-11-01T00:00:00",
            "periodEnd": month["periodEnd"],
        },
        {"factoryId": factory, **month, "totalAmount": "5000000"},
        {"factoryId": factory, **month, "platformFee": 250000.0},
        {"factoryId": factory, **month, "netAmount": -1},
        {"factoryId": factory, **month, "currency": "IDR"},
        {"factoryId": "not-a-uuid", **month},
        {**month},
    ):
        assert_problem(post_settlement(platform, body, admin), 422, "invalid_input")
    backwards = settlements_client(platform).get(
        f"{SETTLEMENTS}/preview",
        params={
            "factoryId": factory,
            "periodStart": month["periodEnd"],
            "periodEnd": month["periodStart"],
        },
        headers=admin,
    )
    assert_problem(backwards, 422, "invalid_period")
    assert snapshot(platform, "settlement") == before
    # A preview of a quiet month: nothing, and nothing stored.
    quiet = ok(
        settlements_client(platform).get(
            f"{SETTLEMENTS}/preview", params={"factoryId": factory, **month}, headers=admin
        )
    )
    assert (quiet["totalAmount"], quiet["platformFee"], quiet["netAmount"], quiet["sessions"]) == (
        0,
        0,
        0,
        [],
    )
    assert_problem(get_settlement(platform, str(uuid.uuid4()), admin), 404, "settlement_not_found")
