"""The ledger functions' A/B bench (tests/bench/ledger_function_ab.py), without a server."""

from __future__ import annotations

import re

from tests.bench.ledger_function_ab import LOOP, Cell, Variant, parse, summary, wallet_ids
from vaultpay_devstack.postgres import Provisioned


def test_wallet_ids_are_distinct_valid_and_in_lock_order() -> None:
    ids = wallet_ids(65)
    assert len(set(ids)) == 65
    assert ids == sorted(ids)
    assert all(re.fullmatch(r"VPY-[A-Z0-9]{6}", i) for i in ids)


def test_the_summary_gives_each_variants_median_and_b_over_a() -> None:
    variants = [
        Variant("A", "t0001", Provisioned("h", 1, "_a")),
        Variant("B", "head", Provisioned("h", 1, "_b")),
    ]
    cells = [
        Cell("A", LOOP, 1, 100.0, 1.0, 0),
        Cell("A", LOOP, 1, 300.0, 3.0, 0),
        Cell("A", LOOP, 1, 200.0, 2.0, 0),
        Cell("B", LOOP, 1, 400.0, 1.0, 0),
    ]
    lines = summary(cells, variants)
    assert "A t0001:   200.0/s  2.000 ms" in lines[1]
    assert "B/A: rate 2.00, CPU 0.50" in lines[1]


def test_defaults_compare_t0001_with_head() -> None:
    args = parse([])
    assert (args.a, args.b, args.clients, args.durable) == ("t0001", "head", [1, 8], False)
    assert parse(["--clients", ""]).clients == []
