"""The warehouse's part of `laku audit`: each variant's stock against its movement ledger and
its reservations, and the reservations themselves, streamed by reference for the checks that
need group-buying's participants too."""

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from laku.core.audit import InvariantOut, invariant, keyed_page
from laku.warehouse.inventory import ledger_check
from laku.warehouse.models import Inventory, Reservation, StockMovement
from laku.warehouse.schemas import AuditReservationOut

RESERVED = "reserved"


async def stock_against_ledger(session: AsyncSession) -> InvariantOut:
    """On hand = initial + received - deducted - surplus +/- adjustments, reserved = the sum of
    reserve and release movements, surplus = the sum of surplus movements, per variant."""
    checks = await ledger_check(session)
    moved = dict(
        (
            await session.execute(
                select(StockMovement.kind, func.sum(StockMovement.quantity_delta)).group_by(
                    StockMovement.kind
                )
            )
        ).all()
    )
    return invariant(
        "warehouse.stock_matches_ledger",
        {
            "variants": len(checks),
            "initial": int(moved.get("initial") or 0),
            "received": int(moved.get("receive") or 0),
            "deducted": -int(moved.get("deduct") or 0),
            "adjusted": int(moved.get("adjust") or 0),
            "toSurplus": -int(moved.get("surplus") or 0),
            "onHand": sum(c.quantity for c in checks),
            "reserved": sum(c.reserved_quantity for c in checks),
            "surplus": sum(c.surplus_quantity for c in checks),
        },
        [
            f"{c.variant_id} (on hand {c.quantity}, ledger {c.ledger_quantity}; reserved "
            f"{c.reserved_quantity}, ledger {c.ledger_reserved}; surplus {c.surplus_quantity}, "
            f"ledger {c.ledger_surplus})"
            for c in checks
            if not c.consistent
        ],
    )


async def reserved_against_holds(session: AsyncSession) -> InvariantOut:
    """Each variant's reserved stock is the sum of its live reservations."""
    holds = (
        select(
            Reservation.variant_id,
            func.count().label("holds"),
            func.sum(Reservation.quantity).label("units"),
        )
        .where(Reservation.status == RESERVED)
        .group_by(Reservation.variant_id)
        .subquery()
    )
    rows = (
        await session.execute(
            select(Inventory.variant_id, Inventory.reserved_quantity, holds.c.holds, holds.c.units)
            .outerjoin(holds, holds.c.variant_id == Inventory.variant_id)
            .order_by(Inventory.variant_id)
        )
    ).all()
    return invariant(
        "warehouse.reserved_matches_holds",
        {
            "variants": len(rows),
            "reserved": sum(row.reserved_quantity for row in rows),
            "holds": sum(row.holds or 0 for row in rows),
            "heldUnits": sum(int(row.units or 0) for row in rows),
        },
        [
            f"{row.variant_id} (reserved {row.reserved_quantity}, holds {int(row.units or 0)})"
            for row in rows
            if row.reserved_quantity != (row.units or 0)
        ],
    )


async def audit(session: AsyncSession) -> list[InvariantOut]:
    """Stock against its movement ledger and reserved stock against the live reservations."""
    return [await stock_against_ledger(session), await reserved_against_holds(session)]


async def reservations_page(
    session: AsyncSession, after: str | None, through: str | None, limit: int
) -> list[AuditReservationOut]:
    """Reservations by reference (byte order), in (after, through]."""
    reference = Reservation.reference.collate("C")
    query = select(
        Reservation.reference, Reservation.status, Reservation.quantity, Reservation.updated_at
    )
    return await keyed_page(
        session, query, reference, AuditReservationOut, after=after, through=through, limit=limit
    )
