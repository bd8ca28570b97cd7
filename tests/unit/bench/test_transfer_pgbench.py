"""The transfer bench's pgbench side (tests/bench/transfer_pgbench.py), without a server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.bench.transfer_pgbench import (
    FUNCTION,
    PLAIN,
    REFERENCE_SCHEMA,
    PgbenchTarget,
    _qualified_copy,
    count_aborted,
    find_pgbench,
    prepare_reference,
    read_logs,
    script_text,
)


def test_only_transactions_completed_inside_the_window_count() -> None:
    lines = [
        "0 1 1500 0 1000 900000",  # completed at 1000.9: warm-up
        "0 2 2500 0 1001 100000",  # 1001.1: in
        "1 1 3000 0 1001 999999",  # in
        "1 2 failed 0 1002 500000",  # in, failed
        "1 3 4000 0 1003 0",  # at the end: out (the window is half-open)
        "garbage",
        "0 3 x 0 not-a-time 5",
    ]
    latencies, errors = read_logs(lines, window_start=1001.0, window_end=1003.0)
    assert latencies == [0.0025, 0.003]
    assert errors == {"pgbench failed": 1}


def test_aborted_clients_are_counted_with_their_reason() -> None:
    stderr = "\n".join(
        [
            "pgbench: error: client 1 aborted in command 17 (set) of script 0; "
            "evaluation of meta-command failed",
            "pgbench: error: client 0 script 0 aborted in command 14 query 0: ERROR:  "
            'invalid input syntax for type integer: "INSUFFICIENT_BALANCE"',
            "pgbench: error: client 2 script 0 aborted in command 14 query 0: ERROR:  "
            'invalid input syntax for type integer: "INSUFFICIENT_BALANCE"',
            "pgbench: error: Run was aborted; the above results are incomplete.",
        ]
    )
    aborted = count_aborted(stderr)
    assert sum(aborted.values()) == 3
    assert aborted["pgbench client aborted: evaluation of meta-command failed"] == 1
    assert any("INSUFFICIENT_BALANCE" in label and n == 2 for label, n in aborted.items())


def _sql_statements(text: str) -> list[str]:
    """First words of the SQL commands of a pgbench script (meta-commands and comments
    skipped; a command ends at `;` or at `\\gset`)."""
    words, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("--", "\\")):
            continue
        if not current:
            words.append(stripped.split()[0].rstrip(";").upper())
        current += stripped
        if stripped.endswith((";", "\\gset")):
            current = ""
    return words


def test_the_plain_transfer_is_seven_statements_and_locks_in_id_order() -> None:
    text = script_text(PLAIN)
    assert _sql_statements(text) == [
        "BEGIN",
        "SELECT",
        "SELECT",
        "UPDATE",
        "UPDATE",
        "WITH",
        "COMMIT",
    ]
    # Both rows locked, the lower wallet number (= the lower id) first.
    locks = [m.start() for m in re.finditer(r"FOR UPDATE", text)]
    assert len(locks) == 2
    assert text.index("n = :lo") < locks[0] < text.index("n = :hi") < locks[1]
    # It writes the movement, its two postings and both sides' rows, only on the copies.
    for table in ("ledger_transactions", "ledger_postings", "wallet_transactions", "wallets"):
        assert f"{REFERENCE_SCHEMA}.{table}" in text
    assert "public.wallets" not in text and "INSERT INTO ledger" not in text


def test_the_function_script_calls_the_service_function_once() -> None:
    text = script_text(FUNCTION)
    assert _sql_statements(text) == ["SELECT"]
    assert "transfer_send_money(" in text
    # SendMoney's own method (the ledger refuses any other service's, t0010), under a caller
    # of pgbench's own that the bench counts apart.
    assert "'pgbench:' || :client_id::text, '/vaultpay.transfer.v1.TransferService/SendMoney'" in (
        text
    )
    # The idempotency record's fingerprint must be a sha256 hex digest.
    assert re.search(r"'[0-9a-f]{64}'", text)


def test_both_scripts_draw_the_sender_and_recipient_alike() -> None:
    plain, function = script_text(PLAIN), script_text(FUNCTION)
    prelude = plain.split("\n\n", 1)[0]
    assert function.startswith(prelude)
    assert "\\set s :client_id + 1" in prelude
    assert "\\set r :n" in prelude  # the hot wallet, the last in id order


def test_copied_definitions_point_at_the_copies() -> None:
    trigger = (
        "CREATE TRIGGER ledger_postings_balanced AFTER INSERT ON public.ledger_postings "
        "REFERENCING NEW TABLE AS new_postings FOR EACH STATEMENT EXECUTE FUNCTION "
        "public.transfer_check_postings_balance()"
    )
    assert " ON bench_ref.ledger_postings " in _qualified_copy(trigger, ["ledger_postings"])
    assert "public.transfer_check_postings_balance()" in _qualified_copy(
        trigger, ["ledger_postings"]
    )
    foreign = "FOREIGN KEY (ledger_transaction_id) REFERENCES public.ledger_transactions(id)"
    assert _qualified_copy(foreign, ["ledger_transactions"]).endswith(
        "REFERENCES bench_ref.ledger_transactions(id)"
    )
    other = "FOREIGN KEY (user_id) REFERENCES public.wallets_archive(id)"
    assert _qualified_copy(other, ["wallets"]) == other


async def test_the_copies_need_the_wallets_in_id_order() -> None:
    with pytest.raises(ValueError, match="id order"):
        await prepare_reference(object(), ["VPY-BBBBBB", "VPY-AAAAAA"], ["u1", "u2"])


def test_pgbench_runs_prepared_with_the_drawing_variables(tmp_path: Path) -> None:
    target = PgbenchTarget(
        binary=Path("/usr/bin/pgbench"),
        host="127.0.0.1",
        port=5432,
        user="postgres",
        password="secret",
        database="vaultpay",
        workdir=tmp_path,
        wallets=65,
        max_amount=100,
    )
    argv = target.argv(tmp_path / "plain.sql", clients=64, threads=2, seconds=6, hot_percent=50)
    joined = " ".join(argv)
    for part in ("-M prepared", "-c 64", "-j 2", "-T 6", "-D n=65", "-D hot_percent=50"):
        assert part in joined
    assert "-l" in argv and argv[-1] == "vaultpay"
    env = target.env({"PATH": "/bin"})
    assert env["PGPASSWORD"] == "secret" and env["PATH"] == "/bin"


def test_pgbench_is_found_where_the_server_binaries_are() -> None:
    try:
        found = find_pgbench()
    except FileNotFoundError:
        pytest.skip("no PostgreSQL binaries on this machine")
    assert found.name == "pgbench"
