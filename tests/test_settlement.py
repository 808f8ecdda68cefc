"""settlement-service over the real processes (seed step 10, design 9): a factory is settled for
the escrow its successful group buys released, less the platform's 5% fee, in a double-entry
ledger the database keeps balanced, and paid out through the Xendit sandbox.

The seed's example: a group buy of MOQ 4 at 1,400,000 / 1,350,000 / 1,300,000 / 1,250,000, two
buyers of 2 Small shirts each (no adjustment) paying 1,400,000 and 1,350,000 a shirt; it closes
at the 100% tier, so each gets the difference back and 4 x 1,250,000 = 5,000,000 is released to
the factory: fee 250,000, net 4,750,000.
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from laku.testing.catalog import create_seed_catalog, created
from laku.testing.platform import Platform, bearer
from tests.group_buys import close_group_buy, end_now, join_group_buy, open_group_buy
from tests.support import admin_headers, assert_problem, eventually, ok, snapshot

# A group buy of 4 Small shirts at the last tier releases the seed's 5,000,000.
FIVE_MILLION_TIERS = {
    "priceTier25": 1_400_000,
    "priceTier50": 1_350_000,
    "priceTier75": 1_300_000,
    "priceTier100": 1_250_000,
}
PAYOUT_ACCOUNT = {
    "bankCode": "BCA",
    "accountNumber": "8720011234",
    "accountHolderName": "PT Konveksi Maju",
}
SETTLEMENTS = "/api/settlements"


@dataclass(frozen=True)
class Released:
    """A factory whose successful group buy released its escrow in [start, end)."""

    factory_id: str
    session_id: str
    start: datetime
    end: datetime

    def period(self) -> dict[str, str]:
        return {"periodStart": self.start.isoformat(), "periodEnd": self.end.isoformat()}

    def body(self, **amounts: int) -> dict[str, Any]:
        return {"factoryId": self.factory_id, **self.period(), **amounts}


def _settlements(platform: Platform) -> httpx.Client:
    return platform.client("settlement")


def _successful_group(platform: Platform, target_moq: int, joins: list[int]) -> Released:
    """A fresh factory whose group buy (one Small shirt buyer per entry of `joins`, each
    paying through the Xendit sandbox) succeeds and releases its escrow."""
    start = datetime.now(UTC) - timedelta(seconds=1)
    catalog = create_seed_catalog(platform, reorder_threshold=0)
    session = open_group_buy(platform, catalog, target_moq, tiers=FIVE_MILLION_TIERS)
    for quantity in joins:
        join_group_buy(platform, session, catalog.variants["S"], quantity, pay=True)
    end_now(platform, session["id"])
    assert close_group_buy(platform, session["id"])["status"] == "success"
    return Released(catalog.factory_id, session["id"], start, datetime.now(UTC))


@pytest.fixture(scope="module")
def seed_group(platform: Platform) -> Released:
    """The seed's example: 5,000,000 released."""
    return _successful_group(platform, 4, [2, 2])


@pytest.fixture(scope="module")
def small_group(platform: Platform) -> Released:
    """One buyer of one shirt at 1,400,000, closed at the 100% tier: 1,250,000 released."""
    return _successful_group(platform, 1, [1])


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
    return _settlements(platform).get(
        f"{SETTLEMENTS}/preview",
        params={"factoryId": released.factory_id, **released.period()},
        headers=headers,
    )


def _set_account(
    platform: Platform, factory_id: str, headers: dict[str, str], **fields: str
) -> httpx.Response:
    return _settlements(platform).put(
        f"{SETTLEMENTS}/payout-accounts/{factory_id}",
        json={**PAYOUT_ACCOUNT, **fields},
        headers=headers,
    )


def _post(
    platform: Platform, body: dict[str, Any], headers: dict[str, str], key: str | None = None
) -> httpx.Response:
    if key is not None:
        headers = {**headers, "Idempotency-Key": key}
    return _settlements(platform).post(SETTLEMENTS, json=body, headers=headers)


def _settle(platform: Platform, released: Released) -> dict[str, Any]:
    """The factory's settlement for its group's period: the one made already (by an earlier
    test), else a new one."""
    admin = admin_headers(platform)
    made = ok(
        _settlements(platform).get(
            SETTLEMENTS, params={"factoryId": released.factory_id}, headers=admin
        )
    )["items"]
    if made:
        return made[0]
    ok(_set_account(platform, released.factory_id, admin))
    return ok(_post(platform, released.body(), admin), 201)


def _get(platform: Platform, settlement_id: str, headers: dict[str, str]) -> httpx.Response:
    return _settlements(platform).get(f"{SETTLEMENTS}/{settlement_id}", headers=headers)


def _balances(platform: Platform) -> dict[str, Any]:
    return ok(_settlements(platform).get("/api/ledger/balances", headers=admin_headers(platform)))


def _account(balances: dict[str, Any], account: str) -> tuple[int, int]:
    found = [a for a in balances["accounts"] if a["account"] == account]
    return (found[0]["debit"], found[0]["credit"]) if found else (0, 0)


def _assert_ledger_balanced(platform: Platform) -> dict[str, Any]:
    """Every entry in the table balances (and has lines), and so do the balances' totals."""
    entries = platform.sql(
        "SELECT e.id, coalesce(sum(l.debit), 0) AS debit, coalesce(sum(l.credit), 0) AS credit, "
        "count(l.id) AS lines FROM settlement.transaction_ledger e "
        "LEFT JOIN settlement.transaction_ledger_lines l ON l.entry_id = e.id GROUP BY e.id"
    )
    assert entries
    unbalanced = [dict(e) for e in entries if e["debit"] != e["credit"] or e["lines"] < 2]
    assert unbalanced == []
    balances = _balances(platform)
    assert balances["totalDebit"] == balances["totalCredit"]
    assert balances["totalDebit"] == sum(a["debit"] for a in balances["accounts"])
    assert balances["totalCredit"] == sum(a["credit"] for a in balances["accounts"])
    return balances


def _payout_id(platform: Platform, settlement_id: str) -> str:
    def requested() -> str | None:
        return ok(_get(platform, settlement_id, admin_headers(platform)))["payoutId"]

    payout_id = eventually(requested)
    assert payout_id, "the payout was never requested"
    return payout_id


def _status_becomes(platform: Platform, settlement_id: str, status: str) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        settlement = ok(_get(platform, settlement_id, admin_headers(platform)))
        return settlement if settlement["status"] == status else None

    # The payout is read back with back-off (1 s, 2 s, 4 s ...) while it is on its way.
    settlement = eventually(settled, timeout=40.0, every=0.3)
    assert settlement, ok(_get(platform, settlement_id, admin_headers(platform)))
    return settlement


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
    assert_problem(_post(platform, seed_body, admin), 409, "no_payout_account")
    assert snapshot(platform, "settlement") == before
    account = ok(_set_account(platform, factory, admin))
    assert {k: account[k] for k in PAYOUT_ACCOUNT} == PAYOUT_ACCOUNT
    before = snapshot(platform, "settlement")
    for wrong in (
        {"totalAmount": 5_000_001},
        {"platformFee": 250_001},
        {"netAmount": 5_000_000},
        {"totalAmount": 5_000_000, "platformFee": 249_999, "netAmount": 4_750_001},
    ):
        body = {**seed_body, **wrong}
        mismatch = assert_problem(_post(platform, body, admin), 409, "settlement_mismatch")
        assert "the server's" in mismatch["detail"]
    assert snapshot(platform, "settlement") == before

    # Seed step 10.
    response = _post(platform, seed_body, admin, key=f"settle:{factory}")
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
    balances = _assert_ledger_balanced(platform)
    assert _account(balances, payable) == (0, 4_750_000)

    # The same key and body again answer the first response; nothing is settled twice.
    replay = _post(platform, seed_body, admin, key=f"settle:{factory}")
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == settlement["id"]
    page = ok(_settlements(platform).get(SETTLEMENTS, params={"factoryId": factory}, headers=admin))
    assert [item["id"] for item in page["items"]] == [settlement["id"]]

    # The payout: requested from Xendit with the settlement's reference, to the factory's bank.
    payout_id = _payout_id(platform, settlement["id"])
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
    assert ok(_get(platform, settlement["id"], admin))["status"] == "pending"

    ok(sandbox.post(f"/sandbox/payouts/{payout_id}/succeed"))
    paid = _status_becomes(platform, settlement["id"], "paid")
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
    balances = _assert_ledger_balanced(platform)
    assert _account(balances, payable) == (4_750_000, 4_750_000)  # nothing owed any more
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
        assert_problem(_post(platform, overlapping, admin), 409, "settlement_period_overlaps")
    # The next period begins where this one ended ([start, end)): nothing was released in it.
    after = {
        "factoryId": factory,
        "periodStart": seed_group.end.isoformat(),
        "periodEnd": datetime.now(UTC).isoformat(),
    }
    assert_problem(_post(platform, after, admin), 409, "nothing_to_settle")
    assert snapshot(platform, "settlement") == before


def test_a_failed_payout_leaves_the_factory_owed(platform: Platform, small_group: Released) -> None:
    settlement = _settle(platform, small_group)
    assert (settlement["totalAmount"], settlement["platformFee"], settlement["netAmount"]) == (
        1_250_000,
        62_500,
        1_187_500,
    )
    payout_id = _payout_id(platform, settlement["id"])
    failed = platform.client("xendit-sandbox").post(
        f"/sandbox/payouts/{payout_id}/fail", params={"failureCode": "INVALID_DESTINATION"}
    )
    ok(failed)
    settled = _status_becomes(platform, settlement["id"], "payout_failed")
    assert (settled["payoutFailureCode"], settled["paidAt"]) == ("INVALID_DESTINATION", None)
    assert [e["kind"] for e in settled["ledgerEntries"]] == ["settlement"]
    balances = _assert_ledger_balanced(platform)
    assert _account(balances, f"factory_payable:{small_group.factory_id}") == (0, 1_187_500)
    failed_page = ok(
        _settlements(platform).get(
            SETTLEMENTS,
            params={"factoryId": small_group.factory_id, "status": "payout_failed"},
            headers=admin_headers(platform),
        )
    )
    assert [item["id"] for item in failed_page["items"]] == [settlement["id"]]


# Who may do what ---------------------------------------------------------------------------------


def test_a_factory_sees_its_own_and_buyers_and_strangers_nothing(
    platform: Platform, seed_group: Released, small_group: Released
) -> None:
    own = _settle(platform, seed_group)
    other = _settle(platform, small_group)
    factory = _factory_user(platform, seed_group.factory_id)
    settlements = _settlements(platform)

    page = ok(settlements.get(SETTLEMENTS, headers=factory))
    assert [item["id"] for item in page["items"]] == [own["id"]]
    assert ok(_get(platform, own["id"], factory))["id"] == own["id"]
    assert ok(_preview(platform, seed_group, factory))["totalAmount"] == 5_000_000
    account = settlements.get(
        f"{SETTLEMENTS}/payout-accounts/{seed_group.factory_id}", headers=factory
    )
    assert ok(account)["accountNumber"] == PAYOUT_ACCOUNT["accountNumber"]

    assert_problem(_get(platform, other["id"], factory), 404, "settlement_not_found")
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
        assert_problem(_post(platform, seed_group.body(), headers), status)
        assert_problem(_set_account(platform, seed_group.factory_id, headers), status)
        assert_problem(settlements.get("/api/ledger/balances", headers=headers), status)
    for headers, status in ((buyer, 403), ({}, 401)):
        assert_problem(settlements.get(SETTLEMENTS, headers=headers), status)
        assert_problem(_get(platform, own["id"], headers), status)
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
        _post(platform, {"factoryId": factory, **month}, admin), 409, "no_payout_account"
    )
    missing = str(uuid.uuid4())
    assert_problem(_post(platform, {"factoryId": missing, **month}, admin), 422, "unknown_factory")
    assert_problem(_set_account(platform, missing, admin), 422, "unknown_factory")
    unknown_preview = _settlements(platform).get(
        f"{SETTLEMENTS}/preview", params={"factoryId": missing, **month}, headers=admin
    )
    assert_problem(unknown_preview, 422, "unknown_factory")
    for fields in ({"bankCode": "NOBANK"}, {"accountNumber": "12ab"}, {"accountHolderName": ""}):
        assert_problem(_set_account(platform, factory, admin, **fields), 422, "invalid_input")
    assert snapshot(platform, "settlement") == before

    ok(_set_account(platform, factory, admin))
    before = snapshot(platform, "settlement")
    assert_problem(
        _post(platform, {"factoryId": factory, **month}, admin), 409, "nothing_to_settle"
    )
    future = {**month, "periodEnd": (datetime.now(UTC) + timedelta(days=1)).isoformat()}
    assert_problem(
        _post(platform, {"factoryId": factory, **future}, admin), 422, "period_not_ended"
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
        assert_problem(_post(platform, body, admin), 422, "invalid_input")
    backwards = _settlements(platform).get(
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
        _settlements(platform).get(
            f"{SETTLEMENTS}/preview", params={"factoryId": factory, **month}, headers=admin
        )
    )
    assert (quiet["totalAmount"], quiet["platformFee"], quiet["netAmount"], quiet["sessions"]) == (
        0,
        0,
        0,
        [],
    )
    assert_problem(_get(platform, str(uuid.uuid4()), admin), 404, "settlement_not_found")
