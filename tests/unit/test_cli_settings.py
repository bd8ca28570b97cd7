"""A service CLI started without its settings says which are missing, never a value, and
exits 2 (a usage error), not 1 (what `verify-ledger` and `verify-audit` answer for a broken
ledger or chain), with no traceback (QA: `vaultpay-transfer verify-ledger` without them)."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support import use_transfer_settings
from vaultpay_common.cli import EXIT_INTERNAL
from vaultpay_transfer.entrypoints.cli import cli


def test_missing_settings_are_named_with_the_way_to_load_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(os.environ):
        if name.startswith("TRANSFER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TRANSFER_SERVICE_CLIENT_SECRET", "canary-secret-value")
    monkeypatch.setenv("TRANSFER_DATABASE_URL", "postgresql+asyncpg://u:canary-password@h/db")

    assert cli.main(["verify-ledger"]) == 2

    said = capsys.readouterr()
    assert said.out == ""
    assert "TRANSFER_SERVICE_CLIENT_ID: Field required" in said.err
    assert "TRANSFER_KEY_ENCRYPTION_KEY: Field required" in said.err
    assert "TRANSFER_SERVICE_CLIENT_SECRET" not in said.err  # it was given
    assert "canary" not in said.err
    assert 'cli env transfer)"' in said.err


# ----- the database cannot be reached: exit 3, one line, never the DSN ------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unreachable_database(monkeypatch: pytest.MonkeyPatch) -> str:
    """transfer's settings, complete, with a database URL (and its password) on a closed port."""
    url = f"postgresql+asyncpg://vaultpay_app:canary-password@127.0.0.1:{_closed_port()}/vaultpay"
    use_transfer_settings(monkeypatch, url)
    return url


@pytest.mark.parametrize(
    ("argv", "outcome"),
    [
        (["verify-ledger"], "nothing was changed"),
        (["verify-audit"], "nothing was changed"),
        (["dead-letters"], "nothing was changed"),
        (
            ["replay-dead-letter", "--event-id", "0b7c8f52-6a1c-4d7e-9a51-3f7e2f0c9d11"],
            "the replay did not happen",
        ),
        (
            [
                "discard-dead-letter",
                "--event-id",
                "0b7c8f52-6a1c-4d7e-9a51-3f7e2f0c9d11",
                "--reason",
                "the payee was erased",
            ],
            "the discard did not happen",
        ),
    ],
)
def test_an_unreachable_database_exits_3_with_one_line_and_no_secret(
    unreachable_database: str,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    outcome: str,
) -> None:
    """Not 1, which `verify-ledger` and `verify-audit` answer for a broken ledger or chain
    (review of 2026-12-03: a raw ConnectionRefusedError traceback, exit 1)."""
    assert cli.main(argv) == 3

    said = capsys.readouterr()
    assert said.out == ""
    [line] = said.err.splitlines()
    assert line.startswith("error: the database is unreachable (")
    assert line.endswith(f"); {outcome}")
    assert "Traceback" not in said.err
    assert "canary" not in said.err and "127.0.0.1" not in said.err


def test_a_lost_connection_inside_a_sqlalchemy_error_is_an_outage_too() -> None:
    """SQLAlchemy wraps asyncpg's errors; the cause tells (vaultpay_common.pg_failures)."""
    import asyncpg
    from sqlalchemy.exc import InterfaceError, OperationalError

    from vaultpay_common.cli import _database_unreachable
    from vaultpay_common.db import DatabaseUnavailableError

    def wrapped(cls: type[Exception], cause: BaseException) -> Exception:
        try:
            raise cls("SELECT 1", None, cause) from cause
        except cls as exc:
            return exc

    lost = asyncpg.ConnectionDoesNotExistError("connection was closed in the middle")
    assert _database_unreachable(wrapped(InterfaceError, lost))
    assert _database_unreachable(DatabaseUnavailableError())
    assert _database_unreachable(ConnectionRefusedError(111, "Connect call failed"))
    assert not _database_unreachable(wrapped(OperationalError, ValueError("a bug")))
    # A file the command could not open is no outage of the database.
    assert not _database_unreachable(PermissionError(13, "Permission denied", "/ckpt/head"))
    assert not _database_unreachable(KeyError("a bug"))


def test_a_bug_is_a_traceback_and_exit_70_not_bad_input_nor_a_failed_check(
    unreachable_database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A KeyError/IndexError inside a command is a bug, not the operator's bad input (exit 2,
    as `except LookupError` made it), nor a broken chain or ledger: exit 1 is what a scheduled
    `verify-audit` pages on, so a bug is exit 70 (EX_SOFTWARE) with its traceback (review of
    2026-12-04: it was exit 1)."""

    async def broken(*_: object) -> int:
        facts: dict[str, int] = {}
        return facts["missing"]

    command = next(c for c in cli._commands if c.name == "verify-audit")
    monkeypatch.setattr(command, "runner", broken)
    assert cli.main(["verify-audit"]) == EXIT_INTERNAL == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err
    assert err.splitlines()[-1].endswith("(KeyError); exit 70, not a failed check")


def test_a_missing_grant_is_a_settings_problem(
    unreachable_database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class InsufficientPrivilegeError(Exception):
        sqlstate = "42501"

    async def refused(*_: object) -> int:
        raise RuntimeError("a statement failed") from InsufficientPrivilegeError(
            "permission denied"
        )

    command = next(c for c in cli._commands if c.name == "verify-ledger")
    monkeypatch.setattr(command, "runner", refused)
    assert cli.main(["verify-ledger"]) == 2
    assert "insufficient_privilege" in capsys.readouterr().err


def test_a_row_level_security_refusal_is_a_bug_not_a_missing_grant(
    unreachable_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    class RowSecurityError(Exception):
        sqlstate = "42501"

    async def refused(*_: object) -> int:
        raise RowSecurityError('new row violates row-level security policy for table "x"')

    command = next(c for c in cli._commands if c.name == "verify-ledger")
    monkeypatch.setattr(command, "runner", refused)
    assert cli.main(["verify-ledger"]) == EXIT_INTERNAL


def test_a_database_url_without_asyncpg_is_named_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRANSFER_DATABASE_URL", "postgresql://u:sekret@127.0.0.1:1/db")
    assert cli.main(["verify-ledger"]) == 2
    err = capsys.readouterr().err
    assert "TRANSFER_DATABASE_URL: Value error, must start with postgresql+asyncpg://" in err
    assert "sekret" not in err


def test_a_migration_url_without_asyncpg_is_named_before_migrate_runs(
    unreachable_database: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Review of 2026-12-05: the owner's DSN pasted as `postgresql://` made `migrate` fail
    on a missing driver, exit 70 ("a bug") with a traceback, not the variable named."""
    monkeypatch.setenv("TRANSFER_MIGRATION_DATABASE_URL", "postgresql://o:sekret@127.0.0.1:1/db")
    assert cli.main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert (
        "TRANSFER_MIGRATION_DATABASE_URL: Value error, must start with postgresql+asyncpg://" in err
    )
    assert "sekret" not in err and "Traceback" not in err


def test_a_database_urls_bad_tls_option_is_named_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A TLS option the connections cannot honour stops the command at once naming the
    variable (exit 2), not at its first connection with a traceback."""
    monkeypatch.setenv(
        "TRANSFER_DATABASE_URL", "postgresql+asyncpg://u:sekret@127.0.0.1:1/db?sslmode=verify-ful"
    )
    assert cli.main(["verify-ledger"]) == 2
    err = capsys.readouterr().err
    assert "TRANSFER_DATABASE_URL: Value error, database URL: ssl/sslmode must be one of" in err
    assert "sekret" not in err and "Traceback" not in err


def test_verify_audit_past_its_bound_exits_3_naming_within(
    unreachable_database: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Review of 2026-12-05: a statement of verify-audit cancelled by its bound (57014) ended
    in a traceback and exit 70, "a bug"; it is "try again" (3), naming `--within`."""
    from sqlalchemy.exc import DBAPIError

    import vaultpay_common.audit as audit

    class CanceledError(Exception):
        sqlstate = "57014"

    asked: list[float | None] = []

    async def too_slow(*_: object, within_seconds: float | None = None, **__: object) -> None:
        asked.append(within_seconds)
        raise DBAPIError("SELECT count(*) ...", None, CanceledError("canceling statement"))

    monkeypatch.setattr(audit, "verify_audit", too_slow)
    assert cli.main(["verify-audit", "--within", "7"]) == 3
    err = capsys.readouterr().err
    assert "not verified within 7 minutes (--within)" in err and "Traceback" not in err
    assert asked == [7 * 60]


def test_a_command_past_its_time_bound_exits_3_not_bad_input(
    unreachable_database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """verify-ledger's checks bounded by 30 minutes on a slow database: "try again" (3), not
    the operator's bad input (2), nor a broken ledger (1)."""
    from vaultpay_common.errors import DeadlineExceededError

    async def too_slow(*_: object) -> int:
        raise DeadlineExceededError()

    command = next(c for c in cli._commands if c.name == "verify-ledger")
    monkeypatch.setattr(command, "runner", too_slow)
    assert cli.main(["verify-ledger"]) == 3
    [line] = capsys.readouterr().err.splitlines()
    assert line == "error: the request took longer than its deadline allows; nothing was changed"


@pytest.mark.parametrize(
    ("command", "given", "said"),
    [
        *(
            ("dead-letters", ["--limit", v], "--limit: must be a whole number from 1 to 1000")
            for v in ("0", "-5", "1001", "ten")
        ),
        *(
            (
                "verify-ledger",
                ["--within", v],
                "--within: must be a whole number of minutes from 1 to 1440",
            )
            for v in ("0", "1441", "half")
        ),
    ],
)
def test_a_number_outside_its_bounds_is_refused_with_both_bounds(
    unreachable_database: str,
    capsys: pytest.CaptureFixture[str],
    command: str,
    given: list[str],
    said: str,
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([command, *given])
    assert exited.value.code == 2
    assert said in capsys.readouterr().err


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501])
def test_a_discard_without_a_reason_is_refused_before_connecting(
    unreachable_database: str, capsys: pytest.CaptureFixture[str], reason: str
) -> None:
    event_id = "0b7c8f52-6a1c-4d7e-9a51-3f7e2f0c9d11"
    assert cli.main(["discard-dead-letter", "--event-id", event_id, "--reason", reason]) == 2
    assert capsys.readouterr().err == "error: --reason must say why, 1 to 500 characters\n"


def test_a_discard_needs_its_reason(
    unreachable_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["discard-dead-letter", "--event-id", "0b7c8f52-6a1c-4d7e-9a51-3f7e2f0c9d11"])
    assert exited.value.code == 2
    assert "the following arguments are required: --reason" in capsys.readouterr().err


@pytest.mark.parametrize(
    "cursor", ["", "yesterday", "2026-12-06T10:00:00,0b7c8f52-6a1c-4d7e-9a51-3f7e2f0c9d11"]
)
def test_dead_letters_refuses_a_cursor_it_did_not_print(
    unreachable_database: str, capsys: pytest.CaptureFixture[str], cursor: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["dead-letters", "--after", cursor])
    assert exited.value.code == 2
    assert "--after: not a cursor dead-letters printed (TIME,EVENT_ID)" in capsys.readouterr().err


def test_a_page_ends_with_the_command_that_shows_the_next() -> None:
    from vaultpay_common.cli import _dead_letter_cursor, _dead_letter_summary
    from vaultpay_common.outbox import DeadLetterKey

    key = DeadLetterKey(
        datetime(2026, 12, 6, 10, 0, 0, 123456, tzinfo=UTC), "0b7c8f52-6a1c-4d7e-9a51-3f7e2f0c9d11"
    )
    cursor = "2026-12-06T10:00:00.123456Z,0b7c8f52-6a1c-4d7e-9a51-3f7e2f0c9d11"
    assert _dead_letter_cursor(cursor) == key  # what it prints, it reads back
    assert _dead_letter_summary("wallet", 50, 50, 312, 312, key) == (
        "showing 1-50 of 312 dead-lettered events of wallet, oldest first; "
        f"the next page: dead-letters --after {cursor}"
    )
    assert _dead_letter_summary("wallet", 200, 200, 312, 262, key) == (
        "showing 51-250 of 312 dead-lettered events of wallet, oldest first; "
        f"the next page: dead-letters --limit 200 --after {cursor}"
    )
    assert _dead_letter_summary("wallet", 200, 62, 312, 62, key) == (
        "showing 251-312 of 312 dead-lettered events of wallet, oldest first; the last page"
    )
    assert _dead_letter_summary("wallet", 50, 3, 3, 3, key) == "3 dead-lettered event(s) of wallet"


@pytest.mark.parametrize("event_id", ["not-a-uuid", "", "12345"])
def test_replay_refuses_an_id_that_is_not_a_uuid_before_connecting(
    unreachable_database: str, capsys: pytest.CaptureFixture[str], event_id: str
) -> None:
    assert cli.main(["replay-dead-letter", "--event-id", event_id]) == 2
    assert capsys.readouterr().err == "error: --event-id must be a UUID\n"


def test_a_setting_that_cannot_be_parsed_is_named_exit_2(
    unreachable_database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad JSON in a mapping setting raises pydantic-settings' SettingsError, not a
    ValidationError: it was a traceback and exit 1."""
    monkeypatch.setenv("TRANSFER_DATABASE_CHAIN_ROLES", '{"canary": ')
    assert cli.main(["verify-ledger"]) == 2
    said = capsys.readouterr().err
    assert "TRANSFER_DATABASE_CHAIN_ROLES: cannot be parsed" in said
    assert "canary" not in said and "Traceback" not in said


@pytest.mark.parametrize(("given", "minutes"), [([], 30), (["--within", "240"], 240)])
def test_verify_ledger_is_bounded_by_its_within_option(
    unreachable_database: str,
    monkeypatch: pytest.MonkeyPatch,
    given: list[str],
    minutes: int,
) -> None:
    """An operator with a ledger or audit chain too large for 30 minutes gives it longer
    (review of 2026-12-04: past some size the default bound failed every run)."""
    import time
    from datetime import UTC, datetime

    from vaultpay_common.context import remaining_seconds
    from vaultpay_transfer.domain.model import LedgerReport
    from vaultpay_transfer.entrypoints import bootstrap

    seen: list[float | None] = []

    class Verifier:
        async def verify(self, on_check: object = None) -> LedgerReport:
            seen.append(remaining_seconds())
            return LedgerReport((), datetime.now(UTC))

    monkeypatch.setattr(bootstrap, "build_verifier", lambda *_: Verifier())
    began = time.monotonic()
    assert cli.main(["verify-ledger", *given]) == 0
    [left] = seen
    assert left is not None
    assert minutes * 60 - (time.monotonic() - began) - 1 < left <= minutes * 60


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRANSFER_PAYOUT_BATCH_SIZE", "0"),
        ("TRANSFER_PAYOUT_INTERVAL_SECONDS", "0"),
        ("TRANSFER_PAYOUT_HOLD_SECONDS", "-1"),
    ],
)
def test_a_payout_setting_that_would_stall_the_worker_is_refused_at_start(
    unreachable_database: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
) -> None:
    """A batch of 0 leased no payout, ever: withdrawals stayed in flight with nothing logged
    (payouts review, 2026-12-04 night)."""
    monkeypatch.setenv(variable, value)
    assert cli.main(["verify-ledger"]) == 2
    assert variable in capsys.readouterr().err


# ----- verify-ledger that could not finish: what ran, what did not, exit 3 ---------------------


class _CutShort:
    """A verifier whose checks run out of time after `runs` of them (`failing` among them)."""

    def __init__(self, runs: int, failing: str = "") -> None:
        self.runs = runs
        self.failing = failing

    async def verify(self, on_check: Any = None) -> Any:
        from vaultpay_transfer.adapters.verify_sql import CHECK_NAMES
        from vaultpay_transfer.domain.model import LedgerCheck
        from vaultpay_transfer.service_layer.verification import ChecksNotFinishedError

        finished = []
        for name in CHECK_NAMES[: self.runs]:
            finished.append(LedgerCheck(name, name != self.failing, "checked"))
            on_check(finished[-1])
        raise ChecksNotFinishedError(finished, CHECK_NAMES[self.runs :])


def test_verify_ledger_past_its_bound_lists_the_checks_not_run_and_exits_3(
    unreachable_database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import vaultpay_transfer.entrypoints.bootstrap as bootstrap

    monkeypatch.setattr(bootstrap, "build_verifier", lambda *_: _CutShort(17))
    assert cli.main(["verify-ledger", "--within", "45"]) == 3
    said = capsys.readouterr()
    lines = said.out.splitlines()
    assert lines[0] == "verifying the ledger: 19 checks, each a full scan"
    assert len(lines) == 20 and all(line.startswith("ok   ") for line in lines[1:18])
    assert lines[18:] == [
        "skip history_rows_owned_by_wallet_owner: not run",
        "skip audit_chain_intact: not run",
    ]
    assert said.err.splitlines() == [
        "error: the checks did not finish within 45 minutes (--within): 2 of 19 not run; run "
        "it again with more (a large ledger: on a replica); nothing was changed"
    ]


def test_verify_ledger_cut_short_after_a_failed_check_is_still_a_failed_check(
    unreachable_database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import vaultpay_transfer.entrypoints.bootstrap as bootstrap

    monkeypatch.setattr(
        bootstrap, "build_verifier", lambda *_: _CutShort(5, failing="total_balance_zero")
    )
    assert cli.main(["verify-ledger"]) == 1
    out = capsys.readouterr().out
    assert "FAIL total_balance_zero: checked" in out
    assert "skip audit_chain_intact: not run" in out
    assert out.endswith("error: the ledger is NOT consistent (and not every check ran)\n")


@pytest.mark.parametrize("command", ["verify-ledger", "verify-audit"])
def test_a_replicas_recovery_conflict_is_run_it_again_with_the_settings_to_look_at(
    unreachable_database: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    """A long read on a standby cancelled to replay the primary's changes (SQLSTATE 40001,
    "conflict with recovery") ended in a traceback and exit 70, "a bug": it is exit 3, with
    the replica settings that let it finish."""
    from asyncpg.exceptions import SerializationError
    from sqlalchemy.exc import DBAPIError

    async def conflicted(*_: object) -> int:
        conflict = SerializationError("canceling statement due to conflict with recovery")
        raise DBAPIError("SELECT ...", None, conflict) from conflict

    runner = next(c for c in cli._commands if c.name == command)
    monkeypatch.setattr(runner, "runner", conflicted)
    assert cli.main([command]) == 3
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: the database cancelled the command's transaction (")
    assert "hot_standby_feedback = on" in line and "max_standby_streaming_delay" in line
    assert line.endswith("then run it again; nothing was changed")
    assert "canceling statement" not in line  # the exception's text is never printed
