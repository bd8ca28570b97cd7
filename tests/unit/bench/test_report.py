"""The bench's ratios, goals and table (tests/bench/report.py), without starting anything."""

from __future__ import annotations

import dataclasses
from collections import Counter

from tests.bench.cpu import CpuUsage
from tests.bench.load import CellStats
from tests.bench.report import (
    RATE_LIMITED,
    Against,
    Goal,
    Row,
    attach_references,
    bcrypt_ceiling_rps,
    format_goals,
    format_table,
)


def stats(concurrency: int, ok: int, latency_ms: float = 1.0, seconds: float = 1.0) -> CellStats:
    return CellStats(concurrency, seconds, [latency_ms / 1000] * ok, Counter())


def test_goals_read_at_least_and_at_most() -> None:
    read = Goal(0.6)
    tail = Goal(3.0, at_most=True)
    assert (str(read), str(tail)) == (">= 0.6", "<= 3")
    assert read.met(0.6) and not read.met(0.59)
    assert tail.met(3.0) and not tail.met(3.01)
    assert read.met(None) is None


def test_the_bcrypt_ceiling_counts_at_most_one_hash_per_worker_and_per_core() -> None:
    assert bcrypt_ceiling_rps(1, 2, 250.0) == 4.0
    assert bcrypt_ceiling_rps(8, 2, 250.0) == 8.0
    assert bcrypt_ceiling_rps(32, 2, 250.0) == 8.0


def plain_rows() -> list[Row]:
    return [
        Row("GetJwks (baseline)", "gRPC", True, stats(8, 1000), 1.0),
        Row("GetBalance", "gRPC", False, stats(8, 700, 2.0), 1.0, goal=Goal(0.6)),
        Row("GetMyWallet", "gRPC", False, stats(8, 500), 1.0, goal=Goal(0.6)),
        Row(
            "VerifyPin",
            "gRPC",
            False,
            stats(8, 30, seconds=4.0),
            1.0,
            against=Against.CEILING,
            reference=8.0,
            goal=Goal(0.85),
        ),
        Row("GetJwks (baseline)", "gRPC", True, stats(1, 400), 1.0),
        Row("GetBalance", "gRPC", False, stats(1, 300, 2.0), 1.0, goal=Goal(0.6)),
    ]


def contention_rows() -> list[Row]:
    return [
        Row(
            "GetBalance, VerifyPin load",
            "gRPC",
            False,
            stats(1, 200, 5.0),
            1.0,
            against=Against.IDLE_P99,
            idle_workload="GetBalance",
            goal=Goal(3.0, at_most=True),
            section="contention",
        ),
        Row(
            "VerifyPin (the load)",
            "gRPC",
            False,
            stats(8, 32, seconds=4.0),
            1.0,
            against=Against.CEILING,
            reference=8.0,
            section="contention",
        ),
    ]


def test_ratios_are_against_the_baseline_the_ceiling_or_the_idle_p99() -> None:
    rows = attach_references(plain_rows() + contention_rows())
    by_name = {(r.workload, r.stats.concurrency): r for r in rows}
    assert by_name["GetJwks (baseline)", 8].against is Against.NOTHING
    assert by_name["GetJwks (baseline)", 8].ratio_text() == "1.000"
    assert by_name["GetBalance", 8].ratio == 0.7  # 700 / 1000 req/s at 8 workers
    assert by_name["GetBalance", 1].ratio == 0.75  # 300 / 400 req/s at 1 worker
    assert by_name["GetMyWallet", 8].goal_met is False
    assert by_name["VerifyPin", 8].ratio == 7.5 / 8.0  # 30 in 4 s against 8/s
    assert by_name["VerifyPin", 8].goal_met is True
    probe = by_name["GetBalance, VerifyPin load", 1]
    assert probe.reference == 2.0  # the idle GetBalance p99 at 1 worker, not the 8-worker one
    assert probe.ratio == 2.5
    assert probe.goal_met is True
    load = by_name["VerifyPin (the load)", 8]
    assert load.goal is None and load.ratio == 1.0


def test_a_ratio_from_too_few_requests_is_marked_rough() -> None:
    rows = attach_references(plain_rows() + contention_rows())
    by_name = {(r.workload, r.stats.concurrency): r for r in rows}
    assert by_name["GetBalance", 8].ratio_text() == "0.700"
    assert by_name["VerifyPin", 8].ratio_text() == "0.938"  # 30 completions: enough
    few = Row("VerifyPin", "gRPC", False, stats(1, 3), 0.2, against=Against.CEILING, reference=4.0)
    assert few.ratio_text() == "~0.750"
    short = [*plain_rows()[4:], contention_rows()[0]]
    short[1] = dataclasses.replace(short[1], stats=stats(1, 50, 2.0))  # idle p99 from 50 calls
    probe = attach_references(short)[-1]
    assert probe.ratio_text() == "~2.500"


def test_without_an_idle_cell_the_tail_has_no_ratio() -> None:
    rows = attach_references([*plain_rows()[:3], contention_rows()[0]])
    probe = rows[-1]
    assert probe.reference is None and probe.ratio_text() == "-" and probe.goal_met is None
    assert "no ratio: GetBalance, VerifyPin load" in format_goals(rows)


def test_a_ratio_against_a_rate_limited_baseline_is_flagged() -> None:
    capped = CellStats(8, 1.0, [0.001] * 100, Counter({RATE_LIMITED: 5}))
    rows = attach_references(
        [
            Row("GetJwks (baseline)", "Envoy JSON", True, capped, 1.0),
            Row("GetBalance", "Envoy JSON", False, stats(8, 50), 1.0),
        ]
    )
    assert rows[1].ratio_text() == "0.500!"


def test_the_table_shows_each_goal_beside_its_ratio_and_whether_it_was_met() -> None:
    rows = attach_references(plain_rows() + contention_rows())
    table = format_table(rows).splitlines()
    assert [c.strip() for c in table[0].split("|")][-5:] == [
        "ratio",
        "of",
        "goal",
        "met",
        "other cpu",
    ]
    cells = {line.split("|")[0].strip(): [c.strip() for c in line.split("|")] for line in table}
    assert cells["GetMyWallet"][7:11] == ["0.500", "baseline", ">= 0.6", "NO"]
    assert cells["VerifyPin"][7:11] == ["0.938", "ceiling 8.0/s", ">= 0.85", "yes"]
    assert cells["GetBalance, VerifyPin load"][7:11] == ["2.500", "idle p99 2.00 ms", "<= 3", "yes"]
    assert cells["VerifyPin (the load)"][9:11] == ["-", "-"]
    # one rule under the header, one per change of (path, workers), one before the section
    assert sum(1 for line in table if set(line) <= {"-", "+"}) == 3


def test_the_goal_summary_names_each_miss_and_a_busy_machine() -> None:
    rows = attach_references(plain_rows() + contention_rows())
    busy = CpuUsage(1.0, 1.2, 0.8)
    rows = [dataclasses.replace(r, cpu=busy) if r.workload == "GetMyWallet" else r for r in rows]
    summary = format_goals(rows)
    assert summary.splitlines()[0] == "goals: 4 of 5 met"
    assert "not met: GetMyWallet via gRPC, 8 workers: 0.500 of baseline (goal >= 0.6)" in summary
    assert "0.80 cores were busy outside the bench" in summary
    assert format_goals(attach_references(plain_rows()[:1])) == "goals: none in this run"


def test_the_json_row_carries_ratio_goal_and_outcome() -> None:
    rows = attach_references(plain_rows() + contention_rows())
    probe = next(r for r in rows if r.section).as_json()
    assert probe["ratio"] == 2.5
    assert probe["ratio_of"] == "idle p99"
    assert probe["reference"] == 2.0
    assert probe["goal"] == "<= 3"
    assert probe["goal_met"] is True
    assert probe["section"] == "contention"
    baseline = rows[0].as_json()
    assert baseline["ratio"] == 1.0 and baseline["goal"] is None and baseline["goal_met"] is None


def test_the_tail_is_compared_with_the_idle_cell_of_its_own_section_first() -> None:
    idle_before = Row(
        "GetBalance, idle", "gRPC", False, stats(1, 300, 4.0), 1.0, section="contention"
    )
    loaded = dataclasses.replace(contention_rows()[0], idle_workload="GetBalance, idle")
    rows = attach_references([*plain_rows(), idle_before, loaded])
    assert rows[-1].reference == 4.0  # not the plain GetBalance cell's 2.0 ms
    assert rows[-1].ratio == 1.25
    assert rows[-2].goal is None and rows[-2].ratio == 0.75  # the idle cell: vs the baseline


def test_a_ratio_that_would_round_onto_its_goal_shows_a_fourth_digit() -> None:
    """0.8497 missed a goal of 0.85: "0.850" beside "NO" read as a contradiction (the README's
    full run of 2026-12-03 21:51)."""

    def pin_row(rps_ratio: float) -> Row:
        return Row(
            "VerifyPin",
            "gRPC",
            False,
            stats(8, 30, seconds=4.0),
            1.0,
            against=Against.CEILING,
            reference=30 / 4.0 / rps_ratio,
            goal=Goal(0.85),
        )

    missed = pin_row(0.8497)
    assert (missed.ratio_text(), missed.met_text()) == ("0.8497", "NO")
    clear = pin_row(0.8412)
    assert clear.ratio_text() == "0.841"
