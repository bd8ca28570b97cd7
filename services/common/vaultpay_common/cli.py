"""One command-line frame for every service's operator commands.

Every service gets `migrate` (its migration chains, as the table owner) and `verify-audit`
(the audit chain of its database); a service with an outbox (`outbox_producer`) also gets
`dead-letters` and `replay-dead-letter`; a service adds its own commands:

    cli = ServiceCli("vaultpay-wallet", WalletSettings, chains=[PLATFORM_CHAIN, WALLET_CHAIN])

    @cli.command("replay-dead-letter", help="send a dead-lettered outbox event again")
    def _args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--event-id", required=True)

    @_args.run
    async def _replay(settings: WalletSettings, args: argparse.Namespace) -> int: ...

    main = cli.main

Commands print progress and results to stdout, errors to stderr, and exit 0 on success,
1 when a check fails (a broken audit chain), 2 on bad input or a refused action.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pydantic
from sqlalchemy.ext.asyncio import AsyncEngine

from vaultpay_common.config import ServiceSettings, settings_problem
from vaultpay_common.db import create_engine
from vaultpay_common.errors import DomainError
from vaultpay_common.migrations import MigrationChain, unnamed_chains, upgrade_all

__all__ = ["CliCommand", "ServiceCli"]

S = TypeVar("S", bound=ServiceSettings)
Configure = Callable[[argparse.ArgumentParser], None]
Runner = Callable[[S, argparse.Namespace], Coroutine[Any, Any, int]]


@dataclass
class CliCommand(Generic[S]):
    name: str
    help: str
    configure: Configure
    runner: Runner[S] | None = None

    def run(self, runner: Runner[S]) -> Runner[S]:
        """Decorator: the coroutine that carries the command out; returns the exit code."""
        self.runner = runner
        return runner


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
        self.command("verify-audit", help="verify the audit log's hash chain")(_no_args).run(
            _verify_audit
        )
        if self.outbox_producer is not None:
            self._add_dead_letter_commands(self.outbox_producer)

    def _add_dead_letter_commands(self, producer: str) -> None:
        from vaultpay_common.outbox import list_dead_letters, replay_dead_letter

        @self.command("dead-letters", help="list outbox events that stopped retrying")
        def _list_args(parser: argparse.ArgumentParser) -> None:
            parser.add_argument("--limit", type=int, default=50)

        @_list_args.run
        async def _list(settings: S, args: argparse.Namespace) -> int:
            engine = _cli_engine(settings)
            try:
                async with engine.connect() as conn:
                    events = await list_dead_letters(conn, producer, args.limit)
            finally:
                await engine.dispose()
            for event in events:
                print(
                    f"{event.event_id}  {event.topic:<22} attempts={event.attempts}  "
                    f"{event.last_error}"
                )
            print(f"{len(events)} dead-lettered event(s)")
            return 0

        @self.command("replay-dead-letter", help="send a dead-lettered outbox event again")
        def _replay_args(parser: argparse.ArgumentParser) -> None:
            parser.add_argument("--event-id", required=True)

        @_replay_args.run
        async def _replay(settings: S, args: argparse.Namespace) -> int:
            engine = _cli_engine(settings)
            try:
                async with engine.begin() as conn:
                    replayed = await replay_dead_letter(conn, args.event_id)
            finally:
                await engine.dispose()
            if not replayed:
                print(f"error: no dead-lettered event {args.event_id}", file=sys.stderr)
                return 2
            print(f"event {args.event_id} is pending again; the relay delivers it shortly")
            return 0

    def command(self, name: str, *, help: str) -> Callable[[Configure], CliCommand[S]]:
        def register(configure: Configure) -> CliCommand[S]:
            command = CliCommand[S](name, help, configure)
            self._commands.append(command)
            return command

        return register

    def main(self, argv: list[str] | None = None) -> int:
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description)
        sub = parser.add_subparsers(dest="command", required=True)
        sub.add_parser("migrate", help="apply the database migrations (owner DSN)")
        for command in self._commands:
            command.configure(sub.add_parser(command.name, help=command.help))
        args = parser.parse_args(argv)
        try:
            settings = self.settings_type()
        except pydantic.ValidationError as exc:
            prefix = str(getattr(self.settings_type, "model_config", {}).get("env_prefix", ""))
            print(settings_problem(exc, self.prog, prefix), file=sys.stderr)
            return 2
        try:
            if args.command == "migrate":
                return self._migrate(settings)
            chosen = next(c for c in self._commands if c.name == args.command)
            if chosen.runner is None:
                raise RuntimeError(f"command {chosen.name} has no runner")
            return asyncio.run(chosen.runner(settings, args))
        except DomainError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 2
        except LookupError as exc:
            print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
            return 2

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


def _cli_engine(settings: ServiceSettings) -> AsyncEngine:
    return create_engine(
        settings.database_url.get_secret_value(), pool_size=1, application_name="vaultpay-cli"
    )


def _no_args(parser: argparse.ArgumentParser) -> None:
    del parser


async def _verify_audit(settings: ServiceSettings, args: argparse.Namespace) -> int:
    from vaultpay_common.audit import FileCheckpointStore, verify_audit

    engine = _cli_engine(settings)
    checkpoints = (
        FileCheckpointStore(settings.audit_checkpoint_dir, settings.audit_checkpoint_key)
        if settings.audit_checkpoint_dir is not None
        else None
    )
    try:
        result = await verify_audit(engine, settings.audit_key, checkpoints)
    finally:
        await engine.dispose()
    print(result.report())
    return 0 if result.ok else 1
