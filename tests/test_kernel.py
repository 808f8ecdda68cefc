"""The shared kernel's rules that do not need a running service."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from laku.core.money import Rupiah, apply_rate


def test_seed_platform_fee() -> None:
    assert apply_rate(5_000_000, 500) == 250_000


@pytest.mark.parametrize(
    ("amount", "bps", "fee"),
    [
        (10, 500, 1),  # 0.5 rounds half up
        (9, 500, 0),  # 0.45 rounds down
        (30, 500, 2),  # 1.5 rounds half up
        (1, 5_000, 1),  # 0.5
        (1, 4_999, 0),
        (0, 500, 0),
        (123_456_789, 10_000, 123_456_789),
    ],
)
def test_fee_rounds_half_up_to_the_rupiah(amount: int, bps: int, fee: int) -> None:
    assert apply_rate(amount, bps) == fee


@given(st.integers(0, 10**15), st.integers(0, 10_000))
def test_fee_is_the_nearest_rupiah(amount: int, bps: int) -> None:
    fee = apply_rate(amount, bps)
    exact_times_2 = 2 * amount * bps  # compare in integers: no float error
    assert 2 * fee * 10_000 - 10_000 <= exact_times_2 < 2 * fee * 10_000 + 10_000
    assert 0 <= fee <= amount


def test_negative_amounts_are_refused() -> None:
    with pytest.raises(ValueError):
        apply_rate(-1, 500)


@pytest.mark.parametrize("value", [1.0, 150000.5, "150000", True, -1, 10**16])
def test_rupiah_on_the_wire_is_a_plain_non_negative_integer(value: object) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Rupiah).validate_python(value)
    assert TypeAdapter(Rupiah).validate_json("150000") == 150_000
