"""One command-line frame for every service's operator commands.

Every service gets `migrate` (its migration chains, as the table owner) and `verify-audit`
(the audit chain of its database); a service with an outbox (`outbox_producer`) also gets
`dead-letters` (a page at a time: `--after` the cursor the page before printed),
`replay-dead-letter` and `discard-dead-letter` (both audited in the database's audit log as
`operator:<login>`, the discard with its `--reason`); a service adds its own commands:

    cli = ServiceCli("vaultpay-wallet", WalletSettings, chains=[PLATFORM_CHAIN, WALLET_CHAIN])

    @cli.command("replay-dead-letter", help="send a dead-lettered outbox event again")
    def _args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--event-id", required=True)

    @_args.run
    async def _replay(settings: WalletSettings, args: argparse.Namespace) -> int: ...

    main = cli.main

Commands print progress and results to stdout, errors to stderr, and exit

    0  success
    1  a check failed (a broken audit chain, an inconsistent ledger)
   70  an unexpected error (a bug: with its traceback; EXIT_INTERNAL)
    2  bad input or a refused action (settings, arguments, an unknown id, a DomainError)
    3  could not run: a dependency is unavailable (the database cannot be reached, or the
       connection was lost) or too slow for the command's time bound, or the database
       cancelled its transaction (a replica's recovery conflict); one line on stderr naming the exception's type (never its text,
       which can carry the host or the user) and what became of the command's changes

so that an automated `verify-audit` / `verify-ledger` reads 1 as "broken" and 3 as "try again".
A command says what an outage means for it with `if_unreachable` (read-only ones: nothing was
changed); a runner that knows better raises `CommandUnreachableError(note) from` the failure.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pydantic
from pydantic_settings import SettingsError
from sqlalchemy.ext.asyncio import AsyncEngine

from vaultpay_common.config import ServiceSettings, settings_problem, unparsable_setting
from vaultpay_common.db import DatabaseUnavailableError, create_engine, query_canceled
from vaultpay_common.errors import (
    DeadlineExceededError,
    DomainError,
    UnavailableError,
    ValidationError,
)
from vaultpay_common.ids import parse_uuid
from vaultpay_common.migrations import MigrationChain, unnamed_chains, upgrade_all
from vaultpay_common.pg_failures import connection_lost, sqlstates

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from vaultpay_common.outbox import DeadLetterKey, OutboxEvent

__all__ = [
    "EXIT_CHECK_FAILED",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "CliCommand",
    "CommandUnreachableError",
    "ServiceCli",
    "say",
    "whole_number",
]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
# An unexpected failure (a bug, or a setting nothing checked): never 1, which a scheduled
# `verify-ledger` or `verify-audit` reads as "an invariant broke". EX_SOFTWARE of sysexits.h.
EXIT_INTERNAL = 70
READ_ONLY = "nothing was changed"
# What a command that writes says when it does not say better.
MAY_HAVE_STOPPED = "it may have stopped part-way: check what it did before running it again"
_MIGRATE_UNREACHABLE = "the migrations it finished stay applied; `migrate` again continues"
# `dead-letters --limit`: one screen to a few; the total, and the next page's cursor, are
# printed either way.
DEAD_LETTER_LIMIT_MAX = 1000
DEAD_LETTER_LIMIT_DEFAULT = 50

S = TypeVar("S", bound=ServiceSettings)
Configure = Callable[[argparse.ArgumentParser], None]
Runner = Callable[[S, argparse.Namespace], Coroutine[Any, Any, int]]


@dataclass
class CliCommand(Generic[S]):
    name: str
    help: str
    configure: Configure
    # The end of the one line printed when the database cannot be reached or is lost.
    if_unreachable: str = MAY_HAVE_STOPPED
    runner: Runner[S] | None = None

    def run(self, runner: Runner[S]) -> Runner[S]:
        """Decorator: the coroutine that carries the command out; returns the exit code."""
        self.runner = runner
        return runner


class CommandUnreachableError(Exception):
    """Raised by a runner `from` a lost connection when it knows better than its command's
    `if_unreachable` what became of its changes (a COMMIT whose outcome is unknown)."""

    def __init__(self, note: str) -> None:
        super().__init__(note)
        self.note = note


@dataclass
class ServiceCli(Generic[S]):
    prog: str
    settings_type: Callable[[], S]
    chains: Sequence[MigrationChain]
    description: str = ""
    # The service's name in the outbox: adds the dead-letter commands.
    outbox_producer: str | None = None
    _commands: list[CliCommand[S]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.command(
            "verify-audit", help="verify the audit log's hash chain", if_unreachable=READ_ONLY
        )(_verify_audit_args).run(_verify_audit)
        if self.outbox_producer is not None:
            self._add_dead_letter_commands(self.outbox_producer)

    def _add_dead_letter_commands(self, producer: str) -> None:
        from vaultpay_common.outbox import (
            DeadLetterKey,
            count_dead_letters,
            discard_dead_letter,
            list_dead_letters,
            replay_dead_letter,
        )
        from vaultpay_common.outbox.sql import DISCARD_REASON_LIMIT, clean_discard_reason

        @self.command(
            "dead-letters",
            help="list outbox events that stopped retrying, oldest first, a page at a time",
            if_unreachable=READ_ONLY,
        )
        def _list_args(parser: argparse.ArgumentParser) -> None:
            parser.add_argument(
                "--limit",
                type=_dead_letter_limit,
                default=DEAD_LETTER_LIMIT_DEFAULT,
                help=f"how many to list, 1 to {DEAD_LETTER_LIMIT_MAX} (default "
                f"{DEAD_LETTER_LIMIT_DEFAULT})",
            )
            parser.add_argument(
                "--after",
                type=_dead_letter_cursor,
                metavar="CURSOR",
                help="the next page: the cursor the page before printed at its end",
            )

        @_list_args.run
        async def _list(settings: S, args: argparse.Namespace) -> int:
            after: DeadLetterKey | None = args.after
            engine = _cli_engine(settings)
            try:
                # One snapshot: the total is what the page is out of, the rest what follows it.
                async with engine.connect() as conn:
                    conn = await conn.execution_options(isolation_level="REPEATABLE READ")
                    events = await list_dead_letters(conn, producer, args.limit, after=after)
                    total = await count_dead_letters(conn, producer)
                    from_here = (
                        total
                        if after is None
                        else await count_dead_letters(conn, producer, after=after)
                    )
            finally:
                await engine.dispose()
            for event in events:
                say(
                    f"{event.event_id}  {event.topic:<22} attempts={event.attempts}  "
                    f"created {_when(event.created_at)}  dead {_when(event.dead_at)}  "
                    f"{event.last_error}"
                )
            last = DeadLetterKey.of(events[-1]) if events else None
            say(_dead_letter_summary(producer, args.limit, len(events), total, from_here, last))
            return EXIT_OK

        @self.command(
            "replay-dead-letter",
            help="send a dead-lettered outbox event again (audited)",
            if_unreachable="the replay did not happen",
        )
        def _replay_args(parser: argparse.ArgumentParser) -> None:
            parser.add_argument(
                "--event-id", required=True, help="its id, as dead-letters lists it"
            )

        @_replay_args.run
        async def _replay(settings: S, args: argparse.Namespace) -> int:
            try:
                event_id = parse_uuid(args.event_id, "event_id")
            except ValidationError:
                print("error: --event-id must be a UUID", file=sys.stderr)
                return EXIT_USAGE
            actor = _operator()

            async def replay(conn: AsyncConnection) -> OutboxEvent | None:
                return await replay_dead_letter(conn, event_id, producer=producer, actor=actor)

            replayed = await _act_on_dead_letter(
                settings,
                replay,
                "the replay may or may not have happened: `dead-letters` shows whether the "
                "event is still dead",
            )
            if replayed is None:
                print(f"error: no dead-lettered event {event_id} of {producer}", file=sys.stderr)
                return EXIT_USAGE
            say(
                f"event {event_id} ({replayed.topic}) is pending again; the relay delivers it "
                f"shortly (audited: outbox.dead_letter_replayed by {actor})"
            )
            return EXIT_OK

        @self.command(
            "discard-dead-letter",
            help="give a dead-lettered outbox event up for good: never delivered (audited)",
            if_unreachable="the discard did not happen",
        )
        def _discard_args(parser: argparse.ArgumentParser) -> None:
            parser.add_argument(
                "--event-id", required=True, help="its id, as dead-letters lists it"
            )
            parser.add_argument(
                "--reason",
                required=True,
                help=f"why (1 to {DISCARD_REASON_LIMIT} characters), kept in the audit log",
            )

        @_discard_args.run
        async def _discard(settings: S, args: argparse.Namespace) -> int:
            try:
                event_id = parse_uuid(args.event_id, "event_id")
            except ValidationError:
                print("error: --event-id must be a UUID", file=sys.stderr)
                return EXIT_USAGE
            try:
                reason = clean_discard_reason(args.reason)
            except ValueError:
                print(
                    f"error: --reason must say why, 1 to {DISCARD_REASON_LIMIT} characters",
                    file=sys.stderr,
                )
                return EXIT_USAGE
            actor = _operator()

            async def discard(conn: AsyncConnection) -> OutboxEvent | None:
                return await discard_dead_letter(
                    conn, event_id, producer=producer, actor=actor, reason=reason
                )

            discarded = await _act_on_dead_letter(
                settings,
                discard,
                "the discard may or may not have happened: `dead-letters` shows whether the "
                "event is still dead",
            )
            if discarded is None:
                print(f"error: no dead-lettered event {event_id} of {producer}", file=sys.stderr)
                return EXIT_USAGE
            say(
                f"event {event_id} ({discarded.topic}) is discarded: it will never be delivered "
                f"(audited: outbox.dead_letter_discarded by {actor})"
            )
            return EXIT_OK

    def command(
        self, name: str, *, help: str, if_unreachable: str = MAY_HAVE_STOPPED
    ) -> Callable[[Configure], CliCommand[S]]:
        """Registers a command. `if_unreachable` ends the line printed (exit 3) when the
        database cannot be reached or is lost: what became of the command's changes."""

        def register(configure: Configure) -> CliCommand[S]:
            command = CliCommand[S](name, help, configure, if_unreachable)
            self._commands.append(command)
            return command

        return register

    @property
    def _env_prefix(self) -> str:
        """The settings' environment prefix (TRANSFER_), to name a variable in a message."""
        return str(getattr(self.settings_type, "model_config", {}).get("env_prefix", ""))

    def main(self, argv: list[str] | None = None) -> int:
        # The description is the module's docstring: a usage line per command, kept as written.
        parser = argparse.ArgumentParser(
            prog=self.prog,
            description=self.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub = parser.add_subparsers(dest="command", required=True)
        sub.add_parser("migrate", help="apply the database migrations (owner DSN)")
        for command in self._commands:
            command.configure(sub.add_parser(command.name, help=command.help))
        args = parser.parse_args(argv)
        try:
            settings = self.settings_type()
        except pydantic.ValidationError as exc:
            print(settings_problem(exc, self.prog, self._env_prefix), file=sys.stderr)
            return EXIT_USAGE
        except SettingsError as exc:
            print(unparsable_setting(exc, self.prog, self._env_prefix), file=sys.stderr)
            return EXIT_USAGE
        chosen = next((c for c in self._commands if c.name == args.command), None)
        if_unreachable = _MIGRATE_UNREACHABLE if chosen is None else chosen.if_unreachable
        try:
            if chosen is None:
                return self._migrate(settings)
            if chosen.runner is None:
                raise RuntimeError(f"command {chosen.name} has no runner")
            return asyncio.run(chosen.runner(settings, args))
        except Exception as exc:
            # Before the outage test: a replica ends an idle transaction's recovery conflict
            # by closing its connection (FATAL 40001), which reads as a lost connection too.
            note = exc.note if isinstance(exc, CommandUnreachableError) else None
            if _transaction_conflict(exc):
                print(
                    f"error: the database cancelled the command's transaction "
                    f"({_root_cause_name(exc)}): {_conflict_hint(exc)}; "
                    f"{note or if_unreachable}",
                    file=sys.stderr,
                )
                return EXIT_UNAVAILABLE
            if _database_unreachable(exc):
                print(
                    f"error: the database is unreachable ({_root_cause_name(exc)}); "
                    f"{note or if_unreachable}",
                    file=sys.stderr,
                )
                return EXIT_UNAVAILABLE
            if _database_refused(exc):
                prefix = self._env_prefix
                print(
                    f"error: the database refused the connection ({_root_cause_name(exc)}): "
                    f"check {prefix}DATABASE_URL (or {prefix}MIGRATION_DATABASE_URL for migrate)",
                    file=sys.stderr,
                )
                return EXIT_USAGE
            if isinstance(exc, UnavailableError | DeadlineExceededError):
                # The database too slow for the command's bound (verify-ledger's 30 minutes)
                # is "try again", as an outage is, not bad input.
                print(f"error: {exc.message}; {if_unreachable}", file=sys.stderr)
                return EXIT_UNAVAILABLE
            if isinstance(exc, DomainError):
                print(f"error: {exc.message}", file=sys.stderr)
                return EXIT_USAGE
            if _lacks_privilege(exc):
                prefix = self._env_prefix
                url = "MIGRATION_DATABASE_URL" if chosen is None else "DATABASE_URL"
                print(
                    "error: the database role may not do this (insufficient_privilege): check "
                    f"{prefix}{url}'s role and that `migrate` ran (it grants)",
                    file=sys.stderr,
                )
                return EXIT_USAGE
            # A bug, or a setting nothing checked: its traceback for whoever debugs it, and an
            # exit code of its own (1 means a check failed).
            traceback.print_exc(file=sys.stderr)
            print(
                f"error: {self.prog} failed unexpectedly ({type(exc).__name__}); "
                f"exit {EXIT_INTERNAL}, not a failed check",
                file=sys.stderr,
            )
            return EXIT_INTERNAL

    def _migrate(self, settings: S) -> int:
        if settings.migration_database_url is None:
            prefix = settings.model_config.get("env_prefix", "")
            print(f"error: {prefix}MIGRATION_DATABASE_URL is not set", file=sys.stderr)
            return 2
        url = settings.migration_database_url.get_secret_value()
        missing = unnamed_chains(self.chains, settings.database_chain_roles)
        if missing:
            prefix = settings.model_config.get("env_prefix", "")
            names = ", ".join(missing)
            print(
                f"error: {prefix}DATABASE_CHAIN_ROLES names no role for: {names}", file=sys.stderr
            )
            return 2
        for chain in self.chains:
            print(f"migrating {chain.name} ...", flush=True)
            upgrade_all(
                [chain], url, settings.database_app_role, chain_roles=settings.database_chain_roles
            )
        print(f"{self.prog}: the database is at the latest migration")
        return 0


def say(line: str) -> None:
    """A line of a report on stdout. A reader that went away (`verify-ledger | head -3`)
    stops the printing, not the command: the exit code is still the verdict (a
    BrokenPipeError would have read as the database's, exit 3)."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        # What is still buffered, and every later line, goes nowhere (Python's own advice).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _cli_engine(settings: ServiceSettings) -> AsyncEngine:
    """One connection, with the service's statement bound (`<PREFIX>_DB_STATEMENT_TIMEOUT_MS`,
    which a command with its own `--within` raises for its snapshot)."""
    return create_engine(
        settings.database_url.get_secret_value(),
        pool_size=1,
        application_name="vaultpay-cli",
        statement_timeout_ms=settings.db_statement_timeout_ms,
    )


def _database_unreachable(exc: BaseException) -> bool:
    """The database could not be reached, or the connection was lost (asyncpg's errors,
    OSError, SQLAlchemy's wrappers of them, DatabaseUnavailableError); not a file the command
    could not open (an OSError naming a file: the audit checkpoints), which is no outage."""
    if isinstance(exc, DatabaseUnavailableError):
        return True
    if isinstance(exc, OSError) and exc.filename is not None:
        return False
    return connection_lost(exc)


# PostgreSQL cancelled the transaction for another's sake, and running it again may succeed:
# a serialization failure (40001) or deadlock (40P01). On a replica (verify-ledger's advice for
# a large ledger) both are how a recovery conflict ends a long read: the replica replays the
# removal of row versions the read still needs, or a lock it conflicts with, after
# max_standby_streaming_delay (30 s by default). Exit 3, "run it again", not a bug's 70.
_CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})


def _transaction_conflict(exc: BaseException) -> bool:
    return any(code in _CONFLICT_SQLSTATES for code, _ in sqlstates(exc))


def _conflict_hint(exc: BaseException) -> str:
    """What to do about it: for a replica's recovery conflict (its message says so; the
    message itself is not printed), the replica's settings that let a long read finish."""
    if any("conflict with recovery" in str(seen) for _, seen in sqlstates(exc)):
        return (
            "a replica cancelled a long read to replay the primary's changes (a recovery "
            "conflict); set hot_standby_feedback = on on the replica, or raise its "
            "max_standby_streaming_delay above the command's time, then run it again"
        )
    return "it conflicted with a concurrent transaction; run it again"


# PostgreSQL refused the settings themselves: a wrong user or password, no such database.
_REFUSED_SQLSTATES = frozenset({"28000", "28P01", "3D000"})


def _lacks_privilege(exc: BaseException) -> bool:
    """PostgreSQL refused a statement to the role (SQLSTATE 42501): a grant is missing. Not a
    row-level-security refusal, which shares the code but is a bug of ours (exit 70)."""
    return any(
        code == "42501" and "row-level security" not in str(seen) for code, seen in sqlstates(exc)
    )


def _database_refused(exc: BaseException) -> bool:
    """PostgreSQL answered, and refused who or what the settings name (SQLSTATE class 28,
    3D000): bad settings, as a missing one is, not an outage and not a failed check."""
    return any(code in _REFUSED_SQLSTATES for code, _ in sqlstates(exc))


def _root_cause_name(exc: BaseException) -> str:
    """The type of the innermost exception `exc` was raised from: the most telling one
    (ConnectionRefusedError rather than SQLAlchemy's wrapper), printed without its text."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return type(exc).__name__


def whole_number(low: int, high: int, *, of: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number from `low` to `high` (of `of`, e.g. "minutes"),
    refused with both bounds said."""
    unit = f" of {of}" if of else ""

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            number = low - 1
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(
                f"must be a whole number{unit} from {low} to {high}, not {text!r}"
            )
        return number

    return parse


_dead_letter_limit = whole_number(1, DEAD_LETTER_LIMIT_MAX)


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if moment else "(not recorded)"


def _operator() -> str:
    """Who runs the command, as the audit log names an operator (auth's and kyc's CLIs too):
    `operator:<login>`; a process whose uid has no login (a container) is named by its uid."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = f"uid-{os.getuid()}"
    return f"operator:{login}"


async def _act_on_dead_letter(
    settings: ServiceSettings,
    act: Callable[[AsyncConnection], Coroutine[Any, Any, OutboxEvent | None]],
    unknown: str,
) -> OutboxEvent | None:
    """Runs a replay or a discard, with its audit row, in one transaction, and commits it:
    the event as it was dead, or None (nothing changed, nothing audited). A connection lost
    at the commit leaves its outcome unknown (`unknown`, exit 3)."""
    engine = _cli_engine(settings)
    try:
        async with engine.connect() as conn:
            transaction = await conn.begin()
            event = await act(conn)
            try:
                await transaction.commit()
            except Exception as exc:
                if connection_lost(exc):
                    raise CommandUnreachableError(unknown) from exc
                raise
    finally:
        await engine.dispose()
    return event


def _dead_letter_cursor_text(key: DeadLetterKey) -> str:
    moment = key.created_at.astimezone(UTC).isoformat(timespec="microseconds")
    return f"{moment.removesuffix('+00:00')}Z,{key.event_id}"


def _dead_letter_cursor(text: str) -> DeadLetterKey:
    """An argparse type: `dead-letters --after`, the cursor a page printed at its end (the
    creation time and id of its last event)."""
    from vaultpay_common.outbox import DeadLetterKey

    moment, _, event_id = text.strip().rpartition(",")
    try:
        created_at = datetime.fromisoformat(moment)
        canonical = parse_uuid(event_id, "event_id")
    except (ValueError, ValidationError):
        created_at, canonical = None, ""
    if created_at is None or created_at.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"not a cursor dead-letters printed (TIME,EVENT_ID): {text!r}"
        )
    return DeadLetterKey(created_at, canonical)


def _dead_letter_summary(
    producer: str, limit: int, shown: int, total: int, from_here: int, last: DeadLetterKey | None
) -> str:
    """The page's last line: how many there are, which of them the page showed, and the
    command that shows the next page (a cursor, so that a page of events nobody will replay
    never hides the ones after it). `from_here`: the dead letters from the page's start on."""
    if shown >= total:
        return f"{total} dead-lettered event(s) of {producer}"
    if shown == 0:
        return (
            f"no dead-lettered event of {producer} after that cursor, {total} in all; "
            "dead-letters without --after lists from the oldest"
        )
    first = total - from_here + 1
    line = (
        f"showing {first}-{first + shown - 1} of {total} dead-lettered events of {producer}, "
        "oldest first"
    )
    if from_here <= shown or last is None:
        return f"{line}; the last page"
    size = "" if limit == DEAD_LETTER_LIMIT_DEFAULT else f"--limit {limit} "
    return f"{line}; the next page: dead-letters {size}--after {_dead_letter_cursor_text(last)}"


# verify-audit's default bound, as verify-ledger's: a chain of tens of millions of rows needs
# minutes (its count of unsealed rows is a scan of the whole table).
VERIFY_AUDIT_MINUTES = 30


def _verify_audit_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--within",
        type=whole_number(1, 24 * 60, of="minutes"),
        default=VERIFY_AUDIT_MINUTES,
        metavar="MINUTES",
        help="bound each of its statements by this many minutes, give up (exit 3) past it, 1 "
        "to 1440 (default: %(default)s)",
    )


async def _verify_audit(settings: ServiceSettings, args: argparse.Namespace) -> int:
    from vaultpay_common.audit import FileCheckpointStore, verify_audit

    engine = _cli_engine(settings)
    checkpoints = (
        FileCheckpointStore(settings.audit_checkpoint_dir, settings.audit_checkpoint_key)
        if settings.audit_checkpoint_dir is not None
        else None
    )

    def progress(verified: int) -> None:  # a long chain takes minutes: say it is moving
        say(f"... {verified:,} seals read")

    try:
        result = await verify_audit(
            engine,
            settings.audit_key,
            checkpoints,
            within_seconds=args.within * 60,
            progress=progress,
        )
    except Exception as exc:
        if query_canceled(exc):
            raise DeadlineExceededError(
                f"the audit log was not verified within {args.within} minutes (--within)"
            ) from exc
        raise
    finally:
        await engine.dispose()
    say(result.report())
    return 0 if result.ok else 1
