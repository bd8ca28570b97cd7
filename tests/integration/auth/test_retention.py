"""What auth keeps, and for how long: sessions and their refresh tokens until 30 days (the
retention) after the session ended, the revocation feed's rows until twice its look-back, the
audit log for ever. The cleanups delete in batches of bounded size, each its own transaction,
finding their rows through an index.

Sessions and tokens are made through the real RPCs and then aged by the database's owner
(the times are the only thing a test cannot wait for).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import jwt
import pytest
from sqlalchemy import event as sqlalchemy_events
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.auth.conftest import AuthStack, bearer
from tests.integration.transfer.sql_capture import (
    CapturedStatement,
    prepared_plan_index_conditions,
    prepared_plan_scans,
)
from tests.support import rpc_failure
from vaultpay.auth.v1 import auth_pb2
from vaultpay_auth.adapters.repositories import SqlAuthUnitOfWork
from vaultpay_auth.adapters.retention import PurgedSessions, purge_ended_sessions
from vaultpay_auth.adapters.revocations import SqlRevocationFeed
from vaultpay_common.db import create_engine

pytestmark = pytest.mark.integration

RETENTION = timedelta(days=30)
DAY = timedelta(days=1)


@pytest.fixture
async def app(auth: AuthStack) -> AsyncIterator[AsyncEngine]:
    """An engine as the service's own (the app role), for the cleanups."""
    engine = create_engine(auth.dbs.auth_app_dsn, pool_size=2, application_name="retention")
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def owner(auth: AuthStack) -> AsyncIterator[asyncpg.Connection]:
    """The database's owner: ages rows and counts what the app role may not touch."""
    conn = await asyncpg.connect(_dsn(auth, auth.dbs.auth_owner_role))
    try:
        yield conn
    finally:
        await conn.close()


def _dsn(auth: AuthStack, role: str) -> str:
    return auth.dbs.url(role, auth.dbs.auth_database, driver="postgresql")


def _sid(tokens: auth_pb2.TokenPair) -> str:
    return str(jwt.decode(tokens.access_token, options={"verify_signature": False})["sid"])


async def _refresh(auth: AuthStack, tokens: auth_pb2.TokenPair) -> auth_pb2.TokenPair:
    reply: auth_pb2.RefreshTokenResponse = await auth.public.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=tokens.refresh_token)
    )
    return reply.tokens


async def _session(auth: AuthStack, *, refreshes: int = 0) -> list[auth_pb2.TokenPair]:
    """A new session and each pair it was given, oldest first (all but the last spent)."""
    _, tokens = await auth.user_with_token()
    pairs = [tokens]
    for _ in range(refreshes):
        pairs.append(await _refresh(auth, pairs[-1]))
    return pairs


async def _age(
    owner: asyncpg.Connection,
    session_id: str,
    *,
    expires: timedelta | None = None,
    revoked: timedelta | None = None,
) -> None:
    """Moves the session's end into the past: it expired `expires` ago (its tokens with it),
    or was revoked `revoked` ago."""
    now = datetime.now(UTC)
    if expires is not None:
        await owner.execute(
            "UPDATE sessions SET expires_at = $2::timestamptz,"
            " created_at = $2::timestamptz - interval '30 days'"
            " WHERE id = $1",
            session_id,
            now - expires,
        )
        await owner.execute(
            "UPDATE refresh_tokens SET expires_at = $2 WHERE session_id = $1",
            session_id,
            now - expires,
        )
    if revoked is not None:
        await owner.execute(
            "UPDATE sessions SET revoked_at = $2, revoke_reason = 'logout' WHERE id = $1",
            session_id,
            now - revoked,
        )


async def _rows(owner: asyncpg.Connection, session_id: str) -> tuple[int, int]:
    """(sessions, refresh tokens) stored of the session."""
    sessions = await owner.fetchval("SELECT count(*) FROM sessions WHERE id = $1", session_id)
    tokens = await owner.fetchval(
        "SELECT count(*) FROM refresh_tokens WHERE session_id = $1", session_id
    )
    return int(sessions), int(tokens)


@contextmanager
def deleted_per_statement(engine: AsyncEngine) -> Iterator[list[tuple[str, int]]]:
    """(table, rows deleted) of every DELETE the engine runs while the block runs."""
    seen: list[tuple[str, int]] = []

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("DELETE FROM "):
            seen.append((statement.split()[2], int(cursor.rowcount)))

    sync = engine.sync_engine
    sqlalchemy_events.listen(sync, "after_cursor_execute", after)
    try:
        yield seen
    finally:
        sqlalchemy_events.remove(sync, "after_cursor_execute", after)


async def test_old_ended_sessions_and_their_tokens_go_live_and_recent_ones_stay(
    auth: AuthStack, app: AsyncEngine, owner: asyncpg.Connection
) -> None:
    expired_long_ago = await _session(auth, refreshes=2)
    revoked_long_ago = await _session(auth, refreshes=1)
    # Revoked yesterday (a password change reaches expired sessions too), expired long ago:
    # it ended when it expired.
    expired_then_revoked = await _session(auth)
    expired_lately = await _session(auth, refreshes=1)
    revoked_lately = await _session(auth, refreshes=1)
    live = await _session(auth, refreshes=2)
    await _age(owner, _sid(expired_long_ago[0]), expires=RETENTION + DAY)
    await auth.public.Logout(auth_pb2.LogoutRequest(), metadata=bearer(revoked_long_ago[-1]))
    await _age(owner, _sid(revoked_long_ago[0]), revoked=RETENTION + DAY)
    await _age(owner, _sid(expired_then_revoked[0]), expires=RETENTION + DAY, revoked=DAY)
    await _age(owner, _sid(expired_lately[0]), expires=RETENTION - DAY)
    await _age(owner, _sid(revoked_lately[0]), revoked=RETENTION - DAY)
    # A live session's spent tokens may be as old as the session (longer ones than 30 days
    # with a longer refresh lifetime): they stay while it lives, reuse detection reads them.
    await owner.execute(
        "UPDATE refresh_tokens SET created_at = now() - interval '400 days' WHERE session_id = $1",
        _sid(live[0]),
    )
    audit = await owner.fetchval("SELECT count(*) FROM audit_events")
    feed = await owner.fetchval("SELECT count(*) FROM session_revocations")

    purged = await purge_ended_sessions(app, retention=RETENTION)

    assert purged.sessions >= 3
    assert purged.refresh_tokens >= 3 + 2 + 1
    for gone in (expired_long_ago, revoked_long_ago, expired_then_revoked):
        assert await _rows(owner, _sid(gone[0])) == (0, 0)
    for kept in (expired_lately, revoked_lately, live):
        assert await _rows(owner, _sid(kept[0])) == (1, len(kept))
    # Audit rows are never touched, nor the revocation feed (it has a purge of its own).
    assert await owner.fetchval("SELECT count(*) FROM audit_events") == audit
    assert await owner.fetchval("SELECT count(*) FROM session_revocations") == feed
    # A purged session's token is unknown now; a kept one's still answers as before.
    unknown = await rpc_failure(_refresh(auth, expired_long_ago[-1]))
    assert (unknown.code, unknown.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    ended = await rpc_failure(_refresh(auth, revoked_lately[0]))
    assert ended.reason == "TOKEN_REVOKED"
    await auth.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(live[-1]))
    assert (await _refresh(auth, live[-1])).refresh_token


async def test_reuse_of_a_kept_spent_token_still_revokes_its_session(
    auth: AuthStack, app: AsyncEngine, owner: asyncpg.Connection
) -> None:
    """The cleanup never takes a token whose session may still be live, however old the token:
    presenting a spent one again still revokes the whole session, after the cleanup too."""
    pairs = await _session(auth, refreshes=2)
    session_id = _sid(pairs[0])
    await owner.execute(
        "UPDATE refresh_tokens SET created_at = now() - interval '400 days' WHERE session_id = $1",
        session_id,
    )
    await purge_ended_sessions(app, retention=RETENTION)
    assert await _rows(owner, session_id) == (1, 3)

    reuse = await rpc_failure(_refresh(auth, pairs[0]))
    assert (reuse.code, reuse.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    newest = await rpc_failure(_refresh(auth, pairs[-1]))
    assert newest.reason == "TOKEN_REVOKED"
    reason = await owner.fetchval("SELECT revoke_reason FROM sessions WHERE id = $1", session_id)
    assert reason == "refresh_token_reuse"
    # Revoked now: it is kept the retention past that, then goes.
    await purge_ended_sessions(app, retention=RETENTION)
    assert await _rows(owner, session_id) == (1, 3)
    later = datetime.now(UTC) + RETENTION + DAY
    await purge_ended_sessions(app, retention=RETENTION, now=later)
    assert await _rows(owner, session_id) == (0, 0)


async def test_the_session_purge_deletes_in_rounds_of_at_most_the_batch_size(
    auth: AuthStack, app: AsyncEngine, owner: asyncpg.Connection
) -> None:
    old = [await _session(auth, refreshes=2) for _ in range(5)]
    fresh = await _session(auth)
    for pairs in old:
        await _age(owner, _sid(pairs[0]), expires=RETENTION + DAY)

    with deleted_per_statement(app) as deletes:
        purged = await purge_ended_sessions(app, retention=RETENTION, batch_size=2)

    assert purged == PurgedSessions(sessions=5, refresh_tokens=15)
    assert all(0 <= count <= 2 for _, count in deletes), deletes
    assert sum(c for t, c in deletes if t == "refresh_tokens") == 15
    assert sum(c for t, c in deletes if t == "sessions") == 5
    assert len(deletes) >= 2 * 8  # 15 tokens two at a time: eight rounds at least
    for pairs in old:
        assert await _rows(owner, _sid(pairs[0])) == (0, 0)
    assert await _rows(owner, _sid(fresh[0])) == (1, 1)
    with pytest.raises(ValueError, match="a day"):
        await purge_ended_sessions(app, retention=timedelta(hours=1))


async def test_the_revocation_feed_purge_deletes_in_batches_what_no_poller_needs(
    auth: AuthStack, app: AsyncEngine, owner: asyncpg.Connection
) -> None:
    await owner.execute("DELETE FROM session_revocations")
    await owner.execute(
        "INSERT INTO session_revocations (session_id, user_id, revoked_at, reason, recorded_at)"
        " SELECT gen_random_uuid(), gen_random_uuid(), now(), 'logout',"
        " clock_timestamp() - i * interval '10 minutes'"
        " FROM generate_series(0, 9) AS i"
    )
    feed = SqlRevocationFeed(app)
    with deleted_per_statement(app) as deletes:
        deleted = await feed.purge(timedelta(minutes=45), batch_size=2)

    assert deleted == 5  # recorded 50 to 90 minutes ago
    assert [count for _, count in deletes] == [2, 2, 1]
    left = await owner.fetchval(
        "SELECT count(*) FROM session_revocations"
        " WHERE recorded_at > clock_timestamp() - interval '45 minutes'"
    )
    assert left == await owner.fetchval("SELECT count(*) FROM session_revocations") == 5


@contextmanager
def sent_statements(engine: AsyncEngine) -> Iterator[list[CapturedStatement]]:
    """Every statement (with its parameters) the engine sends while the block runs."""
    seen: list[CapturedStatement] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        captured = CapturedStatement(engine)
        captured.statement, captured.parameters = statement, parameters
        seen.append(captured)

    sync = engine.sync_engine
    sqlalchemy_events.listen(sync, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        sqlalchemy_events.remove(sync, "before_cursor_execute", before)


def _first(seen: list[CapturedStatement], prefix: str) -> CapturedStatement:
    return next(c for c in seen if c.statement.startswith(prefix))


async def test_the_cleanups_find_their_rows_by_index(
    auth: AuthStack, app: AsyncEngine, owner: asyncpg.Connection
) -> None:
    """A hundred thousand sessions of 66 days (a third revoked soon after sign-in; a quarter
    ended over the retention ago), two tokens each, and 50,000 feed rows: each statement of a cleanup's
    round reads a range of an index and deletes by row address, in the generic plan (asyncpg
    prepares every statement) and in the custom one."""
    with sent_statements(app) as seen:
        await purge_ended_sessions(app, retention=RETENTION)
        await SqlRevocationFeed(app).purge(timedelta(hours=1))
    statements = {
        "ended_tokens": _first(seen, "DELETE FROM refresh_tokens "),
        "ended_sessions": _first(seen, "DELETE FROM sessions "),
        "feed": _first(seen, "DELETE FROM session_revocations "),
    }
    user = await auth.register()
    now = datetime.now(UTC)
    await owner.execute(
        "INSERT INTO sessions (id, user_id, created_at, expires_at, revoked_at)"
        " SELECT gen_random_uuid(), $1::uuid, t, t + interval '30 days',"
        " CASE WHEN i % 3 = 0 THEN t + interval '7 seconds' * i / 57 END"
        " FROM generate_series(1, 100000) AS i,"
        " LATERAL (SELECT $2::timestamptz - i * interval '57 seconds' AS t) AS created",
        user.user_id,
        now,
    )
    await owner.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, user_id, expires_at)"
        " SELECT md5(id::text || k), id, user_id, expires_at FROM sessions,"
        " generate_series(1, 2) AS k WHERE user_id = $1",
        user.user_id,
    )
    await owner.execute(
        "INSERT INTO session_revocations (session_id, user_id, revoked_at, reason, recorded_at)"
        " SELECT gen_random_uuid(), gen_random_uuid(), now(), 'logout',"
        " clock_timestamp() - i * interval '1 second' FROM generate_series(1, 50000) AS i"
    )
    await owner.execute("ANALYZE sessions, refresh_tokens, session_revocations")

    # The indexes each statement must read (by index or bitmap scan), and the table it
    # deletes from by row address.
    expected = {
        "ended_tokens": ({"sessions_ended_idx", "refresh_tokens_session_idx"}, "refresh_tokens"),
        "ended_sessions": ({"sessions_ended_idx", "refresh_tokens_session_idx"}, "sessions"),
        "feed": ({"session_revocations_recorded_idx"}, "session_revocations"),
    }
    app_dsn = _dsn(auth, auth.dbs.auth_app_role)
    for name, statement in statements.items():
        indexes, table = expected[name]
        plans = await prepared_plan_scans(app_dsn, name, statement)
        for mode, scans in plans.items():
            assert indexes <= {index for _, index in scans}, (name, mode, scans)
            assert ("Tid Scan", table) in scans, (name, mode, scans)
            assert "Seq Scan" not in {kind for kind, _ in scans}, (name, mode, scans)
    # The feed's cut is a range of its index, not a walk of the whole index filtering each
    # entry (clock_timestamp() is volatile, so it could not be an index condition).
    conditions = await prepared_plan_index_conditions(app_dsn, "feed_cut", statements["feed"])
    for mode, found in conditions.items():
        assert found.get("session_revocations_recorded_idx"), (mode, found)

    cut = datetime.now(UTC)
    due = await owner.fetchval(
        "SELECT count(*) FROM sessions WHERE least(expires_at, revoked_at) < $1", cut - RETENTION
    )
    purged = await purge_ended_sessions(app, retention=RETENTION, now=cut)
    assert purged == PurgedSessions(sessions=due, refresh_tokens=2 * due)
    assert due > 20_000
    oldest_left = await owner.fetchval(
        "SELECT min(least(expires_at, revoked_at)) FROM sessions WHERE user_id = $1",
        user.user_id,
    )
    assert oldest_left >= now - RETENTION - timedelta(minutes=1)
    orphans = await owner.fetchval(
        "SELECT count(*) FROM refresh_tokens t WHERE NOT EXISTS"
        " (SELECT FROM sessions s WHERE s.id = t.session_id)"
    )
    assert orphans == 0


async def test_revoking_every_session_of_a_user_reads_only_the_live_ones(
    auth: AuthStack, owner: asyncpg.Connection
) -> None:
    """A user with ten thousand revoked sessions and two live ones: a password change (or a
    deactivation, a role change) reads the two from `sessions_live_user_idx`."""
    user = await auth.register()
    await owner.execute(
        "INSERT INTO sessions (id, user_id, created_at, expires_at, revoked_at)"
        " SELECT gen_random_uuid(), $1, now(), now() + interval '30 days',"
        " CASE WHEN i > 2 THEN now() END FROM generate_series(1, 10000) AS i",
        user.user_id,
    )
    await owner.execute("ANALYZE sessions")
    engine = create_engine(auth.dbs.auth_app_dsn, pool_size=1, application_name="revoke-plan")
    try:
        with CapturedStatement(engine) as captured:
            async with SqlAuthUnitOfWork(engine) as uow:
                revoked = await uow.sessions.revoke_all_for_user(
                    user.user_id, "password_changed", except_id=str(uuid.uuid4())
                )
                # (left without commit: rolled back)
    finally:
        await engine.dispose()
    assert revoked == 2
    plans = await prepared_plan_scans(_dsn(auth, auth.dbs.auth_app_role), "revoke_all", captured)
    for mode, scans in plans.items():
        # An index scan or a bitmap scan of the live sessions' index: the planner picks
        # either by its statistics of the moment; never another index or the whole table.
        assert scans in (
            [("Index Scan", "sessions_live_user_idx")],
            [("Bitmap Heap Scan", "sessions"), ("Bitmap Index Scan", "sessions_live_user_idx")],
        ), (mode, scans)
