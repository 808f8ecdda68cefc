"""Reservations are holds (design 15): an unconfirmed hold lapses and the warehouse's sweeper
releases it, a confirmed (paid) one never lapses, and releasing a reference never reserved
voids it so that a reserve arriving after its own undo is refused.

The sweeper runs every second on the test platform (tests/conftest.py); a hold is made to lapse
by moving its expiry into the past in its table, the test standing in for the clock.
"""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from laku.testing.catalog import SeedCatalog, create_seed_catalog
from laku.testing.platform import Platform
from tests.support import admin_headers, assert_problem, eventually, snapshot


def _service(platform: Platform) -> dict[str, str]:
    return platform.service_headers("group-buying")


def _reserve(
    platform: Platform,
    variant_id: str,
    quantity: int,
    reference: str,
    *,
    group: str | None = None,
    expires_at: datetime | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"reference": reference, "variantId": variant_id, "quantity": quantity}
    if group:
        body["group"] = group
    if expires_at:
        body["expiresAt"] = expires_at.isoformat()
    return platform.client("warehouse").post(
        "/api/reservations", json=body, headers=admin_headers(platform)
    )


def _reservation(platform: Platform, reference: str) -> dict[str, Any]:
    response = platform.client("warehouse").get(
        f"/api/reservations/{reference}", headers=admin_headers(platform)
    )
    assert response.status_code == 200, response.text
    return response.json()


def _available(platform: Platform, catalog: SeedCatalog) -> dict[str, int]:
    [product] = (
        platform.client("warehouse")
        .get(
            "/api/inventory",
            params={"productId": catalog.product_id},
            headers=admin_headers(platform),
        )
        .json()
    )
    sizes = {variant_id: size for size, variant_id in catalog.variants.items()}
    return {sizes[v["variantId"]]: v["availableQuantity"] for v in product["variants"]}


def _lapse(platform: Platform, reference: str) -> None:
    """The hold's expiry passes (see the module's docstring)."""
    platform.sql(
        "UPDATE warehouse.reservations SET expires_at = now() - interval '1 second' "
        "WHERE reference = $1",
        reference,
    )


def _ledger_consistent(platform: Platform, catalog: SeedCatalog) -> None:
    checks = platform.client("warehouse").get(
        "/api/inventory/ledger-check",
        params={"productId": catalog.product_id},
        headers=admin_headers(platform),
    )
    assert checks.status_code == 200, checks.text
    assert all(check["consistent"] for check in checks.json()), checks.json()


def test_an_unconfirmed_hold_lapses_and_a_confirmed_one_never_does(platform: Platform) -> None:
    catalog = create_seed_catalog(platform)
    small = catalog.variants["S"]
    unpaid, paid = f"participant:{uuid.uuid4()}", f"participant:{uuid.uuid4()}"
    soon = datetime.now(UTC) + timedelta(minutes=5)
    for reference, quantity in ((unpaid, 2), (paid, 3)):
        held = _reserve(platform, small, quantity, reference, expires_at=soon)
        assert held.status_code == 201, held.text
        assert datetime.fromisoformat(held.json()["expiresAt"]) == soon
    confirm = f"/api/reservations/{paid}/confirm"
    assert_problem(platform.client("warehouse").post(confirm, headers=admin_headers(platform)), 403)
    for _ in range(2):  # confirming again changes nothing
        confirmed = platform.client("warehouse").post(confirm, headers=_service(platform))
        assert confirmed.status_code == 200, confirmed.text
        assert (confirmed.json()["confirmed"], confirmed.json()["expiresAt"]) == (True, None)
    assert _available(platform, catalog)["S"] == 3

    _lapse(platform, unpaid)
    [paid_hold] = platform.sql(
        "SELECT expires_at, confirmed_at FROM warehouse.reservations WHERE reference = $1", paid
    )
    assert paid_hold["expires_at"] is None and paid_hold["confirmed_at"] is not None
    assert eventually(lambda: _reservation(platform, unpaid)["status"] == "released")
    # A later sweep: a hold on another size, lapsed now, is released by it.
    later = f"participant:{uuid.uuid4()}"
    assert _reserve(platform, catalog.variants["M"], 1, later, expires_at=soon).status_code == 201
    _lapse(platform, later)
    assert eventually(lambda: _reservation(platform, later)["status"] == "released")
    assert _reservation(platform, paid)["status"] == "reserved"
    assert _available(platform, catalog)["S"] == 5
    moves = (
        platform.client("warehouse")
        .get(f"/api/inventory/{small}/movements", headers=admin_headers(platform))
        .json()
    )
    [release] = [m for m in moves if m["kind"] == "release"]
    assert (release["reference"], release["reservedDelta"], release["reason"]) == (
        unpaid,
        -2,
        "hold lapsed",
    )
    _ledger_consistent(platform, catalog)

    # A hold that lapsed cannot be confirmed: the payer is owed their money instead.
    refused = platform.client("warehouse").post(
        f"/api/reservations/{unpaid}/confirm", headers=_service(platform)
    )
    assert_problem(refused, 409, "reservation_released")


def test_no_hold_outlasts_the_longest(platform: Platform) -> None:
    catalog = create_seed_catalog(platform)
    longest = timedelta(seconds=platform.settings.reservation_hold_seconds)
    asked_too_long = datetime.now(UTC) + longest + timedelta(days=30)
    for expires_at in (asked_too_long, None):
        before = datetime.now(UTC)
        held = _reserve(
            platform, catalog.variants["M"], 1, f"r:{uuid.uuid4()}", expires_at=expires_at
        )
        assert held.status_code == 201, held.text
        expiry = datetime.fromisoformat(held.json()["expiresAt"])
        assert before + longest <= expiry <= datetime.now(UTC) + longest


def test_releasing_an_unknown_reference_voids_it_for_a_late_reserve(platform: Platform) -> None:
    """The reserve's answer was lost and the undo's release arrived first: the reserve that
    lands afterwards is refused and reserves nothing."""
    catalog = create_seed_catalog(platform)
    reference = f"participant:{uuid.uuid4()}"
    warehouse = platform.client("warehouse")
    for _ in range(2):
        voided = warehouse.post(
            f"/api/reservations/{reference}/release", headers=admin_headers(platform)
        )
        assert voided.status_code == 200, voided.text
        assert (voided.json()["status"], voided.json()["quantity"]) == ("void", 0)
    before = snapshot(platform, "warehouse")
    late = _reserve(platform, catalog.variants["L"], 2, reference, group=f"session:{uuid.uuid4()}")
    assert_problem(late, 409, "reservation_released")
    assert snapshot(platform, "warehouse") == before
    assert _available(platform, catalog) == {"S": 8, "M": 8, "L": 8}
    assert_problem(
        warehouse.post(f"/api/reservations/{reference}/confirm", headers=_service(platform)),
        409,
        "reservation_released",
    )


def test_a_paid_hold_that_lapsed_is_reserved_again_at_the_close(platform: Platform) -> None:
    """Its confirmation came too late and the close names it paid: the stock is owed, so it
    is reserved again and taken out of stock with the group's other paid reservations, while
    the unpaid ones are released."""
    catalog = create_seed_catalog(platform)
    group = f"session:{uuid.uuid4()}"
    medium = catalog.variants["M"]
    lapsed, paid, unpaid = (f"participant:{uuid.uuid4()}" for _ in range(3))
    for reference, quantity in ((lapsed, 2), (paid, 1), (unpaid, 3)):
        assert _reserve(platform, medium, quantity, reference, group=group).status_code == 201
    _lapse(platform, lapsed)
    assert eventually(lambda: _reservation(platform, lapsed)["status"] == "released")
    assert _available(platform, catalog)["M"] == 4

    confirmed = platform.client("warehouse").post(
        f"/api/reservation-groups/{group}/confirm",
        json={"references": [lapsed, paid]},
        headers=_service(platform),
    )
    assert confirmed.status_code == 200, confirmed.text
    assert (confirmed.json()["confirmed"], confirmed.json()["restored"]) == (2, 1)
    fulfilled = platform.client("warehouse").post(
        f"/api/reservation-groups/{group}/fulfil",
        json={"productId": catalog.product_id},
        headers=_service(platform),
    )
    assert fulfilled.status_code == 200, fulfilled.text
    assert (fulfilled.json()["status"], fulfilled.json()["units"]) == ("fulfilled", 3)
    statuses = {ref: _reservation(platform, ref)["status"] for ref in (lapsed, paid, unpaid)}
    assert statuses == {lapsed: "deducted", paid: "deducted", unpaid: "released"}
    [product] = (
        platform.client("warehouse")
        .get(
            "/api/inventory",
            params={"productId": catalog.product_id},
            headers=admin_headers(platform),
        )
        .json()
    )
    [stock] = [v for v in product["variants"] if v["variantId"] == medium]
    assert (stock["quantity"], stock["reservedQuantity"]) == (5, 0)
    _ledger_consistent(platform, catalog)
