"""`vaultpay-transfer`: operator commands for the transfer service.

vaultpay-transfer migrate                          # platform + wallet + transfer migrations
vaultpay-transfer verify-audit                     # the vaultpay database's audit chain
vaultpay-transfer verify-ledger [--within M]       # the ledger's invariants + the audit chain,
                                                   # given up after M minutes (1-1440, 30)
vaultpay-transfer dead-letters [--limit N] [--after C]         # transfer's outbox events that stopped
                                                   # retrying, oldest N (1-1000, 50) of the total
vaultpay-transfer replay-dead-letter --event-id E  # send one again (after fixing the cause)
vaultpay-transfer discard-dead-letter --event-id E --reason R  # give one up for good (audited)

Exit codes (`vaultpay_common.cli`): 0 ok; 1 a check failed (the ledger is not consistent, the
audit chain is broken); 2 bad settings or input; 3 it could not finish, run it again: the
database is unreachable, the checks outlasted --within (those not run are listed), a replica
had not replayed the audit chain's latest checkpoint, or a replica cancelled a read (a
recovery conflict: hot_standby_feedback, max_standby_streaming_delay).

`migrate` runs the wallet chain before the transfer chain: the ledger's functions lock and
update wallet rows and read wallet's limits, so its migration needs wallet's tables.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vaultpay_common.audit.verify import ReplicaBehindError
from vaultpay_common.cli import READ_ONLY, ServiceCli, say, whole_number
from vaultpay_common.context import DEADLINE
from vaultpay_common.db import create_engine
from vaultpay_common.errors import DeadlineExceededError
from vaultpay_common.migrations import PLATFORM_CHAIN, MigrationChain
from vaultpay_transfer.adapters.verify_sql import (
    CHECK_COUNT,
    CHECK_NAMES,
    UNBOUNDED_CALL_TIMEOUT,
)
from vaultpay_transfer.domain.model import LedgerCheck
from vaultpay_transfer.service_layer.verification import ChecksNotFinishedError
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
    outbox_producer="transfer",
)
main = cli.main
_MAX_MINUTES = 24 * 60
_minutes = whole_number(1, _MAX_MINUTES, of="minutes")


@cli.command(
    "verify-ledger",
    help="prove the ledger's invariants and the audit chain",
    if_unreachable=READ_ONLY,
)
def _verify_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--within",
        type=_minutes,
        default=int(UNBOUNDED_CALL_TIMEOUT.total_seconds() // 60),
        metavar="MINUTES",
        help="give up (exit 3) after this many minutes, 1 to 1440 (default: %(default)s); a "
        "ledger or audit chain too large for the default needs more, on a replica",
    )


@_verify_args.run
async def _verify(settings: TransferSettings, args: argparse.Namespace) -> int:
    from vaultpay_transfer.entrypoints.bootstrap import build_verifier

    DEADLINE.set(time.monotonic() + args.within * 60)  # every check, the audit chain's too
    engine = create_engine(
        settings.database_url.get_secret_value(),
        pool_size=1,
        application_name="vaultpay-transfer-cli",
        statement_timeout_ms=settings.db_statement_timeout_ms,
    )
    printed: list[LedgerCheck] = []
    heading = f"verifying the ledger: {CHECK_COUNT} checks, each a full scan"

    def done(check: LedgerCheck) -> None:  # as each completes: a large ledger takes minutes
        if not printed:  # once connected: an unreachable database prints only its error
            say(heading)
        printed.append(check)
        say(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")

    try:
        report = await build_verifier(settings, engine).verify(done)
    except (ChecksNotFinishedError, ReplicaBehindError) as unfinished:
        # Not every check ran: the rest are listed; a check that ran and failed is still
        # the verdict (exit 1), else it could not finish (exit 3: run it again).
        if not printed:
            say(heading)
        for name in CHECK_NAMES[len(printed) :]:
            say(f"skip {name}: not run")
        if not all(check.ok for check in printed):
            say("error: the ledger is NOT consistent (and not every check ran)")
            return 1
        if isinstance(unfinished, ReplicaBehindError):
            raise
        raise DeadlineExceededError(
            f"the checks did not finish within {args.within} minutes (--within): "
            f"{len(unfinished.not_run)} of {CHECK_COUNT} not run; run it again with more (a "
            "large ledger: on a replica)"
        ) from unfinished
    finally:
        await engine.dispose()
    say("the ledger is consistent" if report.ok else "error: the ledger is NOT consistent")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
