"""The hourly cleanup of a service's rows in the shared tables: its expired idempotency records
and its delivered outbox events, each purge on its own.

    cleanup = shared_tables_cleanup(
        engine, service="wallet", producer="wallet", clock=clock, idempotency_retention=retention
    )
    runtime.every(3600.0, cleanup, name="idempotency and outbox cleanup")

The two purges used to run one after the other in one job: when the first raised (a statement
timeout, a lost connection), the second was skipped for the hour, and a failing idempotency
purge meant the outbox was never cleaned. `run_purges` runs every purge whatever the others
did: a failure is logged with the purge's name, and the next one runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from vaultpay_common.clock import Clock
from vaultpay_common.idempotency import purge_expired_idempotency_records
from vaultpay_common.outbox import purge_delivered_outbox_events

__all__ = ["Purge", "run_purges", "shared_tables_cleanup"]

log = logging.getLogger(__name__)

# One purge: deletes what is due and says how many rows went.
Purge = Callable[[], Awaitable[int]]


async def run_purges(purges: Mapping[str, Purge]) -> dict[str, int]:
    """Runs each of `purges` in turn, every one whatever the others did, and returns how many
    rows each deleted (the failed ones left out). A failure is logged at WARNING with the
    purge's name; a cancellation (shutdown) stops the run at once."""
    deleted: dict[str, int] = {}
    for name, purge in purges.items():
        try:
            deleted[name] = await purge()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("purge failed", extra={"purge": name}, exc_info=True)
            continue
        log.info("purge done", extra={"purge": name, "deleted": deleted[name]})
    return deleted


def shared_tables_cleanup(
    engine: AsyncEngine,
    *,
    service: str,
    producer: str,
    clock: Clock,
    idempotency_retention: timedelta,
    own: Mapping[str, Purge] | None = None,
) -> Callable[[], Awaitable[None]]:
    """The periodic job purging `service`'s expired idempotency records, `producer`'s
    delivered outbox events and the service's `own` purges (its own tables), each
    independently of the others (`run_purges`)."""

    async def idempotency_records() -> int:
        return await purge_expired_idempotency_records(
            engine, service, clock=clock, retention=idempotency_retention
        )

    async def outbox_events() -> int:
        return await purge_delivered_outbox_events(engine, producer, clock=clock)

    async def cleanup() -> None:
        await run_purges(
            {
                "idempotency records": idempotency_records,
                "outbox events": outbox_events,
                **(own or {}),
            }
        )

    return cleanup
