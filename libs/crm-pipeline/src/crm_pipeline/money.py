"""Money sums as the contract writes them: exact decimal strings with cents.

Shared by the stage report and the overview's board totals, so both round the same way.
Amounts are summed as they are stored, whatever their ``currency`` (no conversion).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

CENT = Decimal("0.01")


def money(value: Any) -> str:
    """A sum as the contract writes money: a decimal string with cents ("0.00" for none)."""
    amount = Decimal(0) if value is None else Decimal(str(value))
    return str(amount.quantize(CENT, rounding=ROUND_HALF_UP))


def weighted(value: Any) -> str:
    """``SUM(amount * probability)`` (probability in percent) as money: divided by 100, then rounded."""
    return money(None if value is None else Decimal(str(value)) / 100)
