"""`vaultpay-kyc`: operator commands for the kyc service.

vaultpay-kyc migrate                          # platform + kyc migrations (owner DSN)
vaultpay-kyc verify-audit                     # the vaultpay database's audit chain
vaultpay-kyc rotate-key [--request-id UUID]   # new document key, re-wrap every row, with progress
vaultpay-kyc rotate-key --resume              # finish an interrupted rotation, no new key
vaultpay-kyc dead-letters [--limit N] [--after C]         # kyc's outbox events that stopped retrying,
                                              # oldest N (1-1000, 50) of the total
vaultpay-kyc replay-dead-letter --event-id E  # send one again (after fixing the cause)
vaultpay-kyc discard-dead-letter --event-id E --reason R  # give one up for good (audited)

`rotate-key` is the same use case as AdminRotateKycKey, run as the app role with the
service's settings (it needs KYC_KEY_ENCRYPTION_KEY to derive the keys). It prints its request
id first: running it again with that id resumes the same rotation instead of starting another;
an id it started none with starts one, unless another rotation is unfinished (refused, exit
2: `--resume` finishes that one).
"""

from __future__ import annotations

import argparse
import getpass
import sys
import uuid
from pathlib import Path

from vaultpay_common.cli import EXIT_UNAVAILABLE, EXIT_USAGE, ServiceCli
from vaultpay_common.clock import SystemClock
from vaultpay_common.db import create_engine
from vaultpay_common.idempotency import (
    IdempotencyKey,
    IdempotencyKeyInUseError,
    request_fingerprint,
)
from vaultpay_common.migrations import PLATFORM_CHAIN, MigrationChain
from vaultpay_kyc.entrypoints.bootstrap import build_rotation
from vaultpay_kyc.service_layer.commands import RotateKycKey, RotationOutcome, RotationProgress
from vaultpay_kyc.service_layer.rotation import (
    AnotherRotationUnfinishedError,
    KeyRotationIncompleteError,
)
from vaultpay_kyc.settings import KycSettings

__all__ = ["KYC_CHAIN", "main"]

KYC_CHAIN = MigrationChain(
    "kyc", Path(__file__).resolve().parents[2] / "migrations", "alembic_version_kyc"
)
cli = ServiceCli(
    "vaultpay-kyc",
    KycSettings,
    chains=[PLATFORM_CHAIN, KYC_CHAIN],
    description=__doc__,
    outbox_producer="kyc",
)
main = cli.main

_ROTATE_METHOD = "cli:vaultpay-kyc/rotate-key"


@cli.command(
    "rotate-key",
    help="rotate the document encryption key (re-wraps every row)",
    if_unreachable="a rotation that started finishes with `rotate-key --resume` (or its "
    "--request-id), or by the service's periodic job",
)
def _rotate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--request-id",
        help="resume the rotation this command started with this id, or start one under it "
        "unless another is unfinished (`--resume` finishes any unfinished rotation)",
    )
    parser.add_argument("--resume", action="store_true", help="only finish an unfinished rotation")


def _print_progress(progress: RotationProgress) -> None:
    print(f"re-wrapped {progress.rewrapped}, {progress.remaining} left", flush=True)


def _print_outcome(outcome: RotationOutcome) -> None:
    print(
        f"active key {outcome.key_id} (was {outcome.previous_key_id}); "
        f"{outcome.reencrypted_count} submissions re-wrapped; "
        f"dropped: {', '.join(outcome.dropped_key_ids) or 'none'}"
    )


@_rotate_args.run
async def _rotate(settings: KycSettings, args: argparse.Namespace) -> int:
    engine = create_engine(
        settings.database_url.get_secret_value(), pool_size=2, application_name="vaultpay-kyc-cli"
    )
    rotation = build_rotation(settings, engine, SystemClock())
    try:
        if args.resume:
            outcome = await rotation.resume_unfinished(_print_progress)
            if outcome is None:
                print("no unfinished rotation")
                return 0
        else:
            request_id = args.request_id or str(uuid.uuid4())
            key = IdempotencyKey(
                caller="cli",
                method=_ROTATE_METHOD,
                request_id=request_id,
                fingerprint=request_fingerprint(b""),
            )
            command = RotateKycKey(key, f"operator:{getpass.getuser()}")
            print(f"request id {request_id} (run again with --request-id to resume)", flush=True)
            if args.request_id:
                try:
                    outcome = await rotation.resume_or_rotate(command, _print_progress)
                except AnotherRotationUnfinishedError:
                    print(
                        f"error: `rotate-key` started no rotation with request id {request_id}"
                        " and another rotation is unfinished (one started through the API?):"
                        " nothing was started and the id was not used. Finish that one with"
                        " `rotate-key --resume`; it needs no new rotation after it",
                        file=sys.stderr,
                    )
                    return EXIT_USAGE
            else:
                outcome = await rotation.rotate(command, _print_progress)
    except IdempotencyKeyInUseError:
        # Another run with this request id holds it a moment: try again, not bad input.
        print("error: another run with this request id is in progress; try again", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyRotationIncompleteError as exc:
        # Not the operator's bad input (2) nor a failed check (1): unfinished, try again (3).
        print(f"error: {exc.message}; or run `rotate-key --resume`", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        await engine.dispose()
    _print_outcome(outcome)
    if not outcome.finished:
        print("error: rows are still waiting; run `rotate-key --resume`", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
