"""The transfer table's rows, ratios, goals and profile (tests/bench/transfer_report.py and
the output helpers of tests/bench/transfer.py), without starting anything."""

from __future__ import annotations

import dataclasses
from collections import Counter

from tests.bench.cpu import CpuUsage
from tests.bench.load import CellStats
from tests.bench.report import Against, Goal, format_goals, format_table
from tests.bench.transfer import LedgerCheck, format_drains, format_ledger, format_profile
from tests.bench.transfer_report import (
    HOT,
    PLAIN_ROW,
    SEND,
    UNIFORM,
    TailGoal,
    TransferRow,
    against_reference,
)


def stats(clients: int, ok: int, latency_ms: float = 1.0, seconds: float = 1.0) -> CellStats:
    return CellStats(clients, seconds, [latency_ms / 1000] * ok, Counter())


def plain(clients: int, ok: int, section: str = UNIFORM) -> TransferRow:
    return TransferRow(
        PLAIN_ROW,
        "pgbench",
        True,
        stats(clients, ok),
        1.0,
        against=Against.NOTHING,
        section=section,
    )


def send(clients: int, ok: int, *, section: str = UNIFORM, latency_ms: float = 1.0) -> TransferRow:
    goal = TailGoal(0.6, p99_ms=250.0) if section == HOT else Goal(1.0)
    return TransferRow(
        SEND, "gRPC", False, stats(clients, ok, latency_ms), 1.0, goal=goal, section=section
    )


def test_a_send_row_is_read_against_the_plain_pgbench() -> None:
    reference = plain(8, 1000)
    row = against_reference(send(8, 500), reference, "pgbench plain")
    assert row.ratio == 0.5
    assert row.of_text() == "pgbench plain 1000/s"
    assert row.goal_met is False
    assert row.as_json()["ratio_of"] == "pgbench plain"
    assert against_reference(send(8, 1200), reference, "pgbench plain").goal_met is True


def test_without_a_reference_there_is_no_ratio_and_no_verdict() -> None:
    row = against_reference(send(8, 500), None, "pgbench plain")
    assert row.ratio is None and row.goal_met is None
    assert row.of_text() == "pgbench plain (none)"


def test_the_hot_wallet_goal_also_bounds_the_tail() -> None:
    reference = plain(8, 1000, HOT)
    fast = against_reference(send(8, 700, section=HOT, latency_ms=100), reference, "x")
    slow = against_reference(send(8, 700, section=HOT, latency_ms=300), reference, "x")
    few = against_reference(send(8, 40, section=HOT, latency_ms=100), reference, "x")
    assert fast.goal_met is True
    assert slow.goal_met is False  # enough throughput, p99 300 ms
    assert few.goal_met is False and few.rough
    assert str(fast.goal) == ">= 0.6, p99 < 250 ms"


def test_the_table_groups_rows_by_section_and_clients_not_by_path() -> None:
    reference = plain(8, 1000)
    rows = [
        reference,
        against_reference(send(8, 500), reference, "pgbench plain"),
        plain(32, 900),
        against_reference(send(32, 400), plain(32, 900), "pgbench plain"),
    ]
    table = format_table(list(rows)).splitlines()
    rules = [i for i, line in enumerate(table) if set(line) <= set("-+")]
    assert rules == [1, 4]  # under the header, then only between the two client counts
    goals = format_goals(list(rows))
    assert "0 of 2 met" in goals and "of pgbench plain 1000/s" in goals


def test_the_profile_shows_cpu_per_request_and_drops_idle_processes() -> None:
    cpu = CpuUsage(1.0, 1.5, 0.1, {"client": 0.1, "transfer": 0.5, "postgres": 0.4, "redis": 0.0})
    row = against_reference(send(8, 100), plain(8, 1000), "pgbench plain")
    row = dataclasses.replace(row, cpu=cpu)
    text = format_profile([row])
    header, _, line = text.splitlines()
    assert "redis" not in header and "transfer" in header
    assert "5.00" in line and "10.00" in line  # transfer 0.5 core / 100 req/s; the total


def test_the_ledger_check_wants_every_acknowledged_send_and_nothing_more() -> None:
    good = LedgerCheck(True, "the ledger is consistent", 100, 2, 101, 50)
    lost = LedgerCheck(True, "", 100, 0, 99, 0, acknowledged_not_once=1)
    # A lost acknowledged send and a failed one that committed: the counts agree, the ids not.
    swapped = LedgerCheck(True, "", 100, 1, 100, 0, acknowledged_not_once=1)
    extra = LedgerCheck(True, "", 100, 1, 102, 0, beyond_the_sends_made=1)
    assert good.consistent_with_acks
    assert not any(c.consistent_with_acks for c in (lost, swapped, extra))
    text = format_ledger(good)
    assert "CONSISTENT" in text and "100 SendMoney acknowledged" in text
    assert "1 acknowledged not there once" in format_ledger(swapped)
    assert "NOT CONSISTENT" in format_ledger(LedgerCheck(False, "FAIL x", 0, 0, 0, 0))


def test_only_real_notification_backlogs_are_told() -> None:
    drains = [
        {"after": "the setup", "pending": 2, "seconds": 0.2, "left": 0},
        {
            "after": "pgbench fn, 8 clients",
            "pending": 4000,
            "seconds": 40.0,
            "left": 0,
            "cpu_ms_per_event": {"wallet": 0.13, "postgres": 0.22, "redis": 0.001},
        },
        {"after": "SendMoney, 64 clients", "pending": 500, "seconds": 180.0, "left": 20},
    ]
    text = format_drains(drains)
    assert "the setup" not in text
    assert "4000 pending, delivered in 40.0 s (100 events/s)" in text
    assert "CPU ms per event: postgres 0.22, wallet 0.13\n" in text + "\n"
    assert "20 left" in text
    assert format_drains(drains[:1]) == "notification backlogs: none worth telling"
