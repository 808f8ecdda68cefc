"""Money is integer rupiah; rates are basis points (500 = 5%)."""

from typing import Annotated

from pydantic import Field

BASIS_POINTS = 10_000
MAX_RUPIAH = 10**15  # far above any real amount, far below BIGINT

Rupiah = Annotated[int, Field(strict=True, ge=0, le=MAX_RUPIAH)]
"""A non-negative amount of rupiah on the wire: a JSON integer, never a float or string."""

SignedRupiah = Annotated[int, Field(strict=True, ge=-MAX_RUPIAH, le=MAX_RUPIAH)]
"""An amount that may be negative (an adjustment), same wire rules as `Rupiah`."""

BasisPoints = Annotated[int, Field(strict=True, ge=0, le=BASIS_POINTS)]


def apply_rate(amount: int, rate_bps: int) -> int:
    """`amount * rate`, rounded half up to the rupiah (5,000,000 at 500 bps → 250,000)."""
    if amount < 0 or rate_bps < 0:
        raise ValueError("amount and rate must be non-negative")
    return (amount * rate_bps + BASIS_POINTS // 2) // BASIS_POINTS


def format_rupiah(amount: int) -> str:
    """As Indonesians write it: 1049000 -> "Rp 1.049.000"."""
    sign = "-" if amount < 0 else ""
    return f"{sign}Rp {abs(amount):,}".replace(",", ".")
