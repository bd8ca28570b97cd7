"""The relay's two statements, one round trip each, through the pooled connection's asyncpg
driver (`borrowed_driver`): a round claims in one statement and settles in one.

A relay runs a round after every commit that adds events (and once a second when idle), so at
a few movements a second its rounds cost more than the movements' own handlers did: through
SQLAlchemy Core each round built, compiled and cache-keyed five statements and sent them in
two explicit transactions (BEGIN, statements, COMMIT). Here each phase is one constant
statement, prepared once per connection, run as its own implicit transaction.

- `claim_round`: locks up to `limit` due events, soonest first (`FOR UPDATE SKIP LOCKED`, so
  replicas share the work), through the pending events' index alone; of those, dead-letters the
  ones whose last allowed attempt never settled (the lease expired) and leases the others,
  counting the attempt about to start. The two data-modifying parts touch disjoint rows
  (attempts at the cap, or below it) of one snapshot. (The dead-lettering used to search the
  pending events on its own, and after a backlog the planner chose to read the whole table for
  it, delivered events included: 30-50 ms a round with 60,000 rows.) The round's size is
  written into the statement (`claim_statement`), so that even a generic plan knows how few
  rows it joins back.
- `settle_round`: the delivered events, the failed ones (each with its own error and retry
  time, or dead-lettered) and the released ones (attempt given back, due at once), each part
  guarded by the round's lease token and PENDING status, so a relay whose lease expired
  settles nothing another relay re-claimed. The three id sets are disjoint.
- `settle_delivered`: one delivered event, as soon as its handler returned, under the same
  guard: for the topics whose consumer cannot dedupe (`SettledOnReturn`: mail), so that the
  round's later failure does not deliver it again.

The table and its meaning are `outbox/sql.py`'s; `LAST_ERROR_LIMIT` is shared with it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from vaultpay_common.outbox.model import OutboxEvent, OutboxStatus
from vaultpay_common.outbox.sql import LAST_ERROR_LIMIT, truncate_error

__all__ = [
    "SETTLE",
    "SETTLE_ONE",
    "FailedDelivery",
    "SettledRound",
    "claim_round",
    "claim_statement",
    "settle_delivered",
    "settle_round",
]

_CLAIM = """
WITH due AS (
    SELECT event_id, attempts >= $3 AS exhausted FROM outbox_events
     WHERE producer = $1 AND status = 'PENDING' AND available_at <= $2
     ORDER BY available_at
     LIMIT {limit}
       FOR UPDATE SKIP LOCKED
), dead AS (
    UPDATE outbox_events e
       SET status = 'DEAD', dead_at = $2, lease_token = NULL,
           last_error = left('gave up after ' || $3::integer
               || ' attempts (the last lease expired); ' || e.last_error, $6)
      FROM due
     WHERE e.event_id = due.event_id AND due.exhausted
 RETURNING e.event_id
), claimed AS (
    UPDATE outbox_events e
       SET attempts = e.attempts + 1, available_at = $4, lease_token = $5
      FROM due
     WHERE e.event_id = due.event_id AND NOT due.exhausted
 RETURNING e.event_id, e.producer, e.topic, e.key, e.payload::text AS payload, e.attempts,
           e.created_at, e.status, e.available_at, e.last_error, e.dead_at
)
SELECT (SELECT count(*) FROM dead) AS dead, c.*
  FROM (SELECT 1) AS one
  LEFT JOIN claimed AS c ON true
""".strip()


def claim_statement(limit: int) -> str:
    """The claim with its round size written in: a LIMIT the planner can see, also in the
    generic plan PostgreSQL may switch a prepared statement to. With `LIMIT $n` that plan
    guesses a tenth of the table and joins the leased rows back by hashing the whole table."""
    if limit < 1:
        raise ValueError("a round claims at least one event")
    return _CLAIM.format(limit=int(limit))


SETTLE = """
WITH delivered AS (
    UPDATE outbox_events
       SET status = 'DELIVERED', delivered_at = $2, lease_token = NULL
     WHERE event_id = ANY($3::uuid[]) AND lease_token = $1 AND status = 'PENDING'
 RETURNING event_id
), failed AS (
    UPDATE outbox_events e
       SET lease_token = NULL,
           last_error = f.error,
           available_at = coalesce(f.retry_at, e.available_at),
           status = CASE WHEN f.retry_at IS NULL THEN 'DEAD' ELSE e.status END,
           dead_at = CASE WHEN f.retry_at IS NULL THEN $2 ELSE e.dead_at END
      FROM unnest($4::uuid[], $5::timestamptz[], $6::text[]) AS f(event_id, retry_at, error)
     WHERE e.event_id = f.event_id AND e.lease_token = $1 AND e.status = 'PENDING'
 RETURNING e.event_id
), released AS (
    UPDATE outbox_events
       SET lease_token = NULL, available_at = $2, attempts = greatest(attempts - 1, 0)
     WHERE event_id = ANY($7::uuid[]) AND lease_token = $1 AND status = 'PENDING'
 RETURNING event_id
)
SELECT false AS released, event_id FROM delivered
UNION ALL SELECT false, event_id FROM failed
UNION ALL SELECT true, event_id FROM released
""".strip()


# One event delivered, settled on its own (`SettledOnReturn`), guarded as SETTLE's parts are.
SETTLE_ONE = """
UPDATE outbox_events
   SET status = 'DELIVERED', delivered_at = $2, lease_token = NULL
 WHERE event_id = $3 AND lease_token = $1 AND status = 'PENDING'
RETURNING true
""".strip()


# A round's whole lease given back (its claim's answer was lost to a stop): every event the
# token still holds is due again now, its attempt not counted.
RELEASE_LEASE = """
UPDATE outbox_events
   SET lease_token = NULL, available_at = $2, attempts = greatest(attempts - 1, 0)
 WHERE lease_token = $1 AND status = 'PENDING' AND producer = $3
""".strip()


@dataclass(frozen=True, slots=True)
class FailedDelivery:
    """A failed attempt: retried at `retry_at`, or dead-lettered when it is None."""

    event_id: str
    error: str
    retry_at: datetime | None


@dataclass(frozen=True, slots=True)
class SettledRound:
    settled: set[str]  # delivered or failed events this round still held
    released: set[str]  # events made due again


def _event(row: asyncpg.Record) -> OutboxEvent:
    return OutboxEvent(
        event_id=str(row["event_id"]),
        producer=row["producer"],
        topic=row["topic"],
        key=row["key"],
        payload=json.loads(row["payload"]),
        attempts=row["attempts"],
        created_at=row["created_at"],
        status=OutboxStatus(row["status"]),
        available_at=row["available_at"],
        last_error=row["last_error"],
        dead_at=row["dead_at"],
    )


async def claim_round(
    driver: asyncpg.Connection,
    producer: str,
    *,
    now: datetime,
    lease_until: datetime,
    lease_token: str,
    limit: int,
    max_attempts: int,
) -> tuple[int, list[OutboxEvent]]:
    """(events dead-lettered, events leased, oldest first); see the module docstring."""
    rows = await driver.fetch(
        claim_statement(limit),
        producer,
        now,
        max_attempts,
        lease_until,
        uuid.UUID(lease_token),
        LAST_ERROR_LIMIT,
    )
    dead = int(rows[0]["dead"]) if rows else 0
    events = [_event(row) for row in rows if row["event_id"] is not None]
    events.sort(key=lambda e: e.created_at)
    return dead, events


async def settle_round(
    driver: asyncpg.Connection,
    lease_token: str,
    now: datetime,
    *,
    delivered: Sequence[str] = (),
    failed: Sequence[FailedDelivery] = (),
    released: Sequence[str] = (),
) -> SettledRound:
    """Settles a round in one statement (see the module docstring). An id missing from the
    answer had lost its lease to another relay meanwhile."""
    if not (delivered or failed or released):
        return SettledRound(set(), set())
    rows = await driver.fetch(
        SETTLE,
        uuid.UUID(lease_token),
        now,
        [uuid.UUID(i) for i in delivered],
        [uuid.UUID(f.event_id) for f in failed],
        [f.retry_at for f in failed],
        [truncate_error(f.error) for f in failed],
        [uuid.UUID(i) for i in released],
    )
    settled = {str(row["event_id"]) for row in rows if not row["released"]}
    given_back = {str(row["event_id"]) for row in rows if row["released"]}
    return SettledRound(settled, given_back)


async def settle_delivered(
    driver: asyncpg.Connection, lease_token: str, now: datetime, event_id: str
) -> bool:
    """Settles one delivered event of the round holding `lease_token`, in one statement; False
    when the round no longer holds it (its lease expired and another relay re-claimed it)."""
    settled = await driver.fetchval(SETTLE_ONE, uuid.UUID(lease_token), now, uuid.UUID(event_id))
    return bool(settled)


async def release_lease(
    driver: asyncpg.Connection, producer: str, lease_token: str, now: datetime
) -> None:
    """Makes every event still leased under `lease_token` due again at once, its attempt given
    back: a round whose claim committed but whose answer a stop cut short never knew its
    events, and would leave them leased for the whole lease."""
    await driver.execute(RELEASE_LEASE, uuid.UUID(lease_token), now, producer)
