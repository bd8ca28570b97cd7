"""`vaultpay-transfer`: operator commands for the transfer service.

vaultpay-transfer migrate                          # platform + wallet + transfer migrations
vaultpay-transfer verify-audit                     # the vaultpay database's audit chain
vaultpay-transfer verify-ledger                    # the ledger's invariants + the audit chain
vaultpay-transfer dead-letters [--limit N]         # outbox events that stopped retrying
vaultpay-transfer replay-dead-letter --event-id E  # send one again (after fixing the cause)

`migrate` runs the wallet chain before the transfer chain: the ledger's functions lock and
update wallet rows and read wallet's limits, so its migration needs wallet's tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vaultpay_common.cli import ServiceCli
from vaultpay_common.db import create_engine
from vaultpay_common.migrations import PLATFORM_CHAIN, MigrationChain
from vaultpay_common.outbox import list_dead_letters, replay_dead_letter
from vaultpay_transfer.settings import TransferSettings

__all__ = ["TRANSFER_CHAIN", "WALLET_CHAIN", "main"]

_SERVICES = Path(__file__).resolve().parents[3]
WALLET_CHAIN = MigrationChain(
    "wallet", _SERVICES / "wallet" / "migrations", "alembic_version_wallet"
)
TRANSFER_CHAIN = MigrationChain(
    "transfer", _SERVICES / "transfer" / "migrations", "alembic_version_transfer"
)
cli = ServiceCli(
    "vaultpay-transfer",
    TransferSettings,
    chains=[PLATFORM_CHAIN, WALLET_CHAIN, TRANSFER_CHAIN],
    description=__doc__,
)
main = cli.main


@cli.command("verify-ledger", help="prove the ledger's invariants and the audit chain")
def _verify_args(parser: argparse.ArgumentParser) -> None:
    del parser


@_verify_args.run
async def _verify(settings: TransferSettings, args: argparse.Namespace) -> int:
    from vaultpay_transfer.entrypoints.bootstrap import build_verifier

    engine = create_engine(
        settings.database_url.get_secret_value(),
        pool_size=1,
        application_name="vaultpay-transfer-cli",
    )
    try:
        report = await build_verifier(settings, engine).verify()
    finally:
        await engine.dispose()
    for check in report.checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    print("the ledger is consistent" if report.ok else "error: the ledger is NOT consistent")
    return 0 if report.ok else 1


@cli.command("dead-letters", help="list outbox events that stopped retrying")
def _dead_letter_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=50)


@_dead_letter_args.run
async def _dead_letters(settings: TransferSettings, args: argparse.Namespace) -> int:
    engine = create_engine(
        settings.database_url.get_secret_value(),
        pool_size=1,
        application_name="vaultpay-transfer-cli",
    )
    try:
        async with engine.connect() as conn:
            events = await list_dead_letters(conn, "transfer", args.limit)
    finally:
        await engine.dispose()
    for event in events:
        print(f"{event.event_id}  {event.topic:<22} attempts={event.attempts}  {event.last_error}")
    print(f"{len(events)} dead-lettered event(s)")
    return 0


@cli.command("replay-dead-letter", help="send a dead-lettered outbox event again")
def _replay_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--event-id", required=True)


@_replay_args.run
async def _replay(settings: TransferSettings, args: argparse.Namespace) -> int:
    engine = create_engine(
        settings.database_url.get_secret_value(),
        pool_size=1,
        application_name="vaultpay-transfer-cli",
    )
    try:
        async with engine.begin() as conn:
            replayed = await replay_dead_letter(conn, args.event_id)
    finally:
        await engine.dispose()
    if not replayed:
        print(f"error: no dead-lettered event {args.event_id}")
        return 2
    print(f"event {args.event_id} is pending again; the relay delivers it shortly")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
