"""The retention of sessions and refresh tokens: ended ones are deleted once old enough.

Every sign-in writes a session and every refresh a refresh-token row; only this job deletes
them. A session ends when it expires (`expires_at`, 30 days after the sign-in) or is revoked
(`revoked_at`: logout, refresh-token reuse, password or role change, deactivation), whichever
comes first: `least(expires_at, revoked_at)` (LEAST ignores a NULL). A refresh token never
outlives its session (its `expires_at` is the session's, and a refresh is refused once its
session is revoked or expired), so once a session has ended none of its tokens is accepted any
more. They are kept `retention` past the end anyway (30 days by default,
`AUTH_SESSION_RETENTION_SECONDS`): until then a token presented again still answers
TOKEN_REVOKED or TOKEN_EXPIRED (a spent one of a session that expired is audited as a reuse)
rather than TOKEN_INVALID. A live session keeps all its tokens, spent ones included: they are
what reuse detection reads.

The job deletes in rounds, each its own short transaction: at most `batch_size` tokens of the
oldest `batch_size` ended sessions (the foreign key wants them gone first), then those of these
sessions that have no token left. The sessions come from `sessions_ended_idx` (auth 0007), an
index on the end, in order; the rows go by their addresses (a TID scan), as the idempotency
purge does. Nothing else refers to a session: the revocation feed's rows copy what they need
(and are purged on their own clock) and audit rows name sessions by id, never by key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import DateTime, Integer, bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "MIN_SESSION_RETENTION",
    "PurgedSessions",
    "ended_session_tokens_delete",
    "ended_sessions_delete",
    "purge_ended_sessions",
]

log = logging.getLogger(__name__)

# Far above any clock skew between replicas and the 15 minutes an access token may outlive a
# revocation's commit; the default is 30 days.
MIN_SESSION_RETENTION = timedelta(days=1)

# Each round's statements read the same victims, `e`: the oldest `batch_size` sessions that
# ended before the cut, from sessions_ended_idx (the expression must stay what the index is
# built on, word for word). Their tokens are looked up session by session in
# refresh_tokens_session_idx: the LIMIT inside each LATERAL keeps it a nested loop, where a
# plain join's generic plan hash-joined a scan of the whole token table.

# Up to `batch_size` tokens of those sessions.
ended_session_tokens_delete = text(
    "DELETE FROM refresh_tokens WHERE ctid = ANY(ARRAY("
    "SELECT k.ctid FROM ("
    " SELECT s.id FROM sessions s WHERE least(s.expires_at, s.revoked_at) < :older_than"
    " ORDER BY least(s.expires_at, s.revoked_at) LIMIT :batch_size"
    ") AS e CROSS JOIN LATERAL ("
    " SELECT t.ctid FROM refresh_tokens t WHERE t.session_id = e.id LIMIT :batch_size"
    ") AS k LIMIT :batch_size))"
).bindparams(
    bindparam("older_than", type_=DateTime(timezone=True)),
    bindparam("batch_size", type_=Integer),
)

# Those of them that have no token left (the foreign key would refuse the others).
ended_sessions_delete = text(
    "DELETE FROM sessions WHERE ctid = ANY(ARRAY("
    "SELECT e.ctid FROM ("
    " SELECT s.ctid, s.id FROM sessions s WHERE least(s.expires_at, s.revoked_at) < :older_than"
    " ORDER BY least(s.expires_at, s.revoked_at) LIMIT :batch_size"
    ") AS e LEFT JOIN LATERAL ("
    " SELECT true AS held FROM refresh_tokens t WHERE t.session_id = e.id LIMIT 1"
    ") AS k ON true WHERE k.held IS NULL))"
).bindparams(
    bindparam("older_than", type_=DateTime(timezone=True)),
    bindparam("batch_size", type_=Integer),
)


@dataclass(frozen=True, slots=True)
class PurgedSessions:
    sessions: int = 0
    refresh_tokens: int = 0


async def purge_ended_sessions(
    engine: AsyncEngine,
    *,
    retention: timedelta,
    batch_size: int = 5_000,
    now: datetime | None = None,
) -> PurgedSessions:
    """The cleanup job: deletes the sessions that ended more than `retention` before `now`
    (the current time by default) and their refresh tokens, at most `batch_size` of each a
    transaction; returns how many went."""
    if retention < MIN_SESSION_RETENTION:
        raise ValueError("ended sessions must be kept at least a day")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    params = {"older_than": (now or datetime.now(UTC)) - retention, "batch_size": batch_size}
    sessions = tokens = 0
    while True:
        async with engine.begin() as conn:
            round_tokens = int((await conn.execute(ended_session_tokens_delete, params)).rowcount)
            round_sessions = int((await conn.execute(ended_sessions_delete, params)).rowcount)
        tokens += round_tokens
        sessions += round_sessions
        # Fewer than a batch of each: the oldest ended sessions were all deleted, tokens and
        # all, and there were fewer than a batch of them; nothing older than the cut is left.
        if round_tokens < batch_size and round_sessions < batch_size:
            break
    if sessions or tokens:
        log.info(
            "ended sessions purged",
            extra={"sessions": sessions, "refresh_tokens": tokens},
        )
    return PurgedSessions(sessions, tokens)
