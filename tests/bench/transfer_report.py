"""The transfer table's rows: ratios against a reference measured in the same run.

A `TransferRow` is a `report.Row` (so `format_table`, `format_goals` and the JSON are the
shared ones) whose ratio divides its req/s by a reference row's: the plain-SQL pgbench at the
same clients and variant, or the one-process cell for the two-process one. The PIN-checked
row keeps report's bcrypt ceiling. The hot-wallet goal also bounds the p99 latency
(`TailGoal`). Rows are grouped in the table by section (variant and clients), not by path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tests.bench.report import FEW_SAMPLES, Against, Goal, Row

__all__ = [
    "FUNCTION_ROW",
    "HOT",
    "PIN",
    "PLAIN_ROW",
    "SEND",
    "TWO",
    "UNIFORM",
    "TailGoal",
    "TransferRow",
    "against_reference",
]

# Sections (variants) of the table.
UNIFORM = "uniform"
HOT = "hot wallet"
PIN = "production PIN"
TWO = "two processes"
# Row names.
PLAIN_ROW = "pgbench plain SQL (reference)"
FUNCTION_ROW = "pgbench transfer_send_money()"
SEND = "SendMoney"


@dataclass(frozen=True)
class TailGoal(Goal):
    """At least `value` of the reference, with the p99 latency under `p99_ms`."""

    p99_ms: float = 0.0

    def met_with(self, ratio: float | None, p99_ms: float | None) -> bool | None:
        if ratio is None or p99_ms is None:
            return None
        return bool(self.met(ratio)) and p99_ms < self.p99_ms

    def __str__(self) -> str:
        return f"{super().__str__()}, p99 < {self.p99_ms:g} ms"


@dataclass(frozen=True)
class TransferRow(Row):
    """A row whose ratio is against `reference_name`'s req/s (`reference`), when set."""

    reference_name: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.reference_name is None:
            return super().ratio
        if self.reference is None or self.reference <= 0:
            return None
        return self.stats.rps / self.reference

    @property
    def goal_met(self) -> bool | None:
        if isinstance(self.goal, TailGoal):
            return self.goal.met_with(self.ratio, self.stats.quantile_ms(99))
        return super().goal_met

    @property
    def rough(self) -> bool:
        if isinstance(self.goal, TailGoal) and 0 < self.stats.ok < FEW_SAMPLES:
            return True
        return super().rough

    def of_text(self) -> str:
        if self.reference_name is None:
            return super().of_text()
        if self.reference is None:
            return f"{self.reference_name} (none)"
        return f"{self.reference_name} {self.reference:.0f}/s"

    def table_group(self) -> tuple[str, int | str]:
        return (self.section, self.stats.concurrency)

    def as_json(self) -> dict[str, Any]:
        document = super().as_json()
        if self.reference_name is not None:
            document["ratio_of"] = self.reference_name
        return document


def against_reference(row: TransferRow, reference: Row | None, name: str) -> TransferRow:
    """`row` with its ratio against `reference`'s req/s (None: no ratio, shown as such)."""
    return dataclasses.replace(
        row,
        against=Against.BASELINE,
        reference=None if reference is None else reference.stats.rps,
        reference_name=name,
    )
