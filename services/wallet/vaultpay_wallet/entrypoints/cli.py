"""`vaultpay-wallet`: operator commands for the wallet service.

vaultpay-wallet migrate                         # platform + wallet migrations (owner DSN)
vaultpay-wallet verify-audit                    # the vaultpay database's audit chain
vaultpay-wallet dead-letters [--limit N]        # outbox events that stopped retrying
vaultpay-wallet replay-dead-letter --event-id E # send one again (after fixing the cause)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vaultpay_common.cli import ServiceCli
from vaultpay_common.db import create_engine
from vaultpay_common.migrations import PLATFORM_CHAIN, MigrationChain
from vaultpay_common.outbox import list_dead_letters, replay_dead_letter
from vaultpay_wallet.settings import WalletSettings

__all__ = ["WALLET_CHAIN", "main"]

WALLET_CHAIN = MigrationChain(
    "wallet", Path(__file__).resolve().parents[2] / "migrations", "alembic_version_wallet"
)
cli = ServiceCli(
    "vaultpay-wallet", WalletSettings, chains=[PLATFORM_CHAIN, WALLET_CHAIN], description=__doc__
)
main = cli.main


@cli.command("dead-letters", help="list outbox events that stopped retrying")
def _dead_letter_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=50)


@_dead_letter_args.run
async def _dead_letters(settings: WalletSettings, args: argparse.Namespace) -> int:
    engine = create_engine(
        settings.database_url.get_secret_value(),
        pool_size=1,
        application_name="vaultpay-wallet-cli",
    )
    try:
        async with engine.connect() as conn:
            events = await list_dead_letters(conn, "wallet", args.limit)
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
async def _replay(settings: WalletSettings, args: argparse.Namespace) -> int:
    engine = create_engine(
        settings.database_url.get_secret_value(),
        pool_size=1,
        application_name="vaultpay-wallet-cli",
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
