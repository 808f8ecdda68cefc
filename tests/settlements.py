"""A factory's settlement over HTTP (seed step 10): successful group buys releasing escrow in a
period, the payout account, settlements and the ledger they book."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from laku.testing.catalog import SeedCatalog, create_seed_catalog
from laku.testing.platform import Platform
from tests.group_buys import Joined, close_group_buy, end_now, join_group_buy, open_group_buy
from tests.support import admin_headers, eventually, ok

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


def settlements_client(platform: Platform) -> httpx.Client:
    return platform.client("settlement")


def successful_group(platform: Platform, target_moq: int, joins: list[int]) -> Released:
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


def set_payout_account(
    platform: Platform, factory_id: str, headers: dict[str, str], **fields: str
) -> httpx.Response:
    return settlements_client(platform).put(
        f"{SETTLEMENTS}/payout-accounts/{factory_id}",
        json={**PAYOUT_ACCOUNT, **fields},
        headers=headers,
    )


def post_settlement(
    platform: Platform, body: dict[str, Any], headers: dict[str, str], key: str | None = None
) -> httpx.Response:
    if key is not None:
        headers = {**headers, "Idempotency-Key": key}
    return settlements_client(platform).post(SETTLEMENTS, json=body, headers=headers)


def settle(platform: Platform, released: Released) -> dict[str, Any]:
    """The factory's settlement for its group's period, made now."""
    admin = admin_headers(platform)
    ok(set_payout_account(platform, released.factory_id, admin))
    return ok(post_settlement(platform, released.body(), admin), 201)


def get_settlement(
    platform: Platform, settlement_id: str, headers: dict[str, str]
) -> httpx.Response:
    return settlements_client(platform).get(f"{SETTLEMENTS}/{settlement_id}", headers=headers)


def ledger_balances(platform: Platform) -> dict[str, Any]:
    return ok(
        settlements_client(platform).get("/api/ledger/balances", headers=admin_headers(platform))
    )


def ledger_account(balances: dict[str, Any], account: str) -> tuple[int, int]:
    found = [a for a in balances["accounts"] if a["account"] == account]
    return (found[0]["debit"], found[0]["credit"]) if found else (0, 0)


def assert_ledger_balanced(platform: Platform) -> dict[str, Any]:
    """Every entry in the table balances (and has lines), and so do the balances' totals."""
    entries = platform.sql(
        "SELECT e.id, coalesce(sum(l.debit), 0) AS debit, coalesce(sum(l.credit), 0) AS credit, "
        "count(l.id) AS lines FROM settlement.transaction_ledger e "
        "LEFT JOIN settlement.transaction_ledger_lines l ON l.entry_id = e.id GROUP BY e.id"
    )
    assert entries
    unbalanced = [dict(e) for e in entries if e["debit"] != e["credit"] or e["lines"] < 2]
    assert unbalanced == []
    balances = ledger_balances(platform)
    assert balances["totalDebit"] == balances["totalCredit"]
    assert balances["totalDebit"] == sum(a["debit"] for a in balances["accounts"])
    assert balances["totalCredit"] == sum(a["credit"] for a in balances["accounts"])
    return balances


def payout_id_of(platform: Platform, settlement_id: str) -> str:
    def requested() -> str | None:
        return ok(get_settlement(platform, settlement_id, admin_headers(platform)))["payoutId"]

    payout_id = eventually(requested)
    assert payout_id, "the payout was never requested"
    return payout_id


def settlement_becomes(platform: Platform, settlement_id: str, status: str) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        settlement = ok(get_settlement(platform, settlement_id, admin_headers(platform)))
        return settlement if settlement["status"] == status else None

    # The payout is read back with back-off (1 s, 2 s, 4 s ...) while it is on its way.
    settlement = eventually(settled, timeout=40.0, every=0.3)
    assert settlement, ok(get_settlement(platform, settlement_id, admin_headers(platform)))
    return settlement


@dataclass(frozen=True)
class Group:
    """A successful group buy of the factory, its escrow released in [start, end)."""

    session_id: str
    joined: list[Joined]
    start: datetime
    end: datetime

    def body(self, factory_id: str) -> dict[str, Any]:
        return {
            "factoryId": factory_id,
            "periodStart": self.start.isoformat(),
            "periodEnd": self.end.isoformat(),
        }


def successful_group_in_period(
    platform: Platform,
    catalog: SeedCatalog,
    start: datetime,
    size: str,
    target_moq: int,
    joins: list[int],
) -> Group:
    session = open_group_buy(platform, catalog, target_moq, tiers=FIVE_MILLION_TIERS)
    joined = [join_group_buy(platform, session, catalog.variants[size], q, pay=True) for q in joins]
    end_now(platform, session["id"])
    assert close_group_buy(platform, session["id"])["status"] == "success"
    return Group(session["id"], joined, start, datetime.now(UTC))
