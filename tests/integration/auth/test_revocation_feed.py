"""The strict path of a peer service from auth's revocation feed, against a real auth stack.

A peer (what wallet, transfer and kyc build with PeerAuth) polls the feed and answers strict
calls from memory: in steady state no strict call costs an IntrospectToken round trip (they
are counted on the peer's channel), and after a logout, a refresh-token reuse, a password
change, a deactivation or a role change the revoked token is refused within one second of the
auth call's return. With the feed stopped or auth unreachable past the freshness bound, strict
calls ask auth, and fail closed (UNAVAILABLE) when auth cannot answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import jwt
import pytest
from sqlalchemy import make_url, text

from tests.integration.auth.conftest import PASSWORD, SERVICE_SECRET, AuthStack, bearer
from tests.integration.auth.stacks import own_auth_stack
from tests.support import pooled_drivers, until_seen_ended
from vaultpay.auth.v1 import auth_pb2
from vaultpay.type.v1 import role_pb2
from vaultpay_auth.adapters.revocations import SqlRevocationFeed
from vaultpay_auth.domain.revocations import FeedCursor
from vaultpay_auth.service_layer.revocations import RevocationFeedService
from vaultpay_common.context import Principal, Role
from vaultpay_common.db import DatabaseUnavailableError, create_engine
from vaultpay_common.errors import UnauthenticatedError
from vaultpay_common.grpc.auth_client import (
    AuthUnavailableError,
    GrpcRevocationSource,
    PeerAuth,
    ServiceTokenProvider,
)
from vaultpay_common.grpc.authz import AuthInterceptor, InsufficientPermissionsError
from vaultpay_common.grpc.revocations import FeedCursorRejectedError
from vaultpay_common.grpc.rules import AccessRule
from vaultpay_devstack.infra import Infra

STRICT_USER = "/vaultpay.test.v1.Probe/StrictUser"
STRICT_ADMIN = "/vaultpay.test.v1.Probe/StrictAdmin"
LENIENT_USER = "/vaultpay.test.v1.Probe/LenientUser"
INTROSPECT = "/vaultpay.auth.v1.AuthInternalService/IntrospectToken"
POLL = "/vaultpay.auth.v1.AuthInternalService/PollSessionRevocations"
BOUND = 1.0  # the freshness bound, and the promise: a revoked token refused within it
NEW_PASSWORD = "another horse 43 battery staple"


@pytest.fixture(scope="module")
async def auth(infra: Infra) -> AsyncIterator[AuthStack]:
    async with own_auth_stack(infra, "authfeed") as stack:
        yield stack


class CountCalls(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Counts the calls a peer makes to auth, by method."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    async def intercept_unary_unary(
        self,
        continuation: Callable[[Any, Any], Awaitable[Any]],
        client_call_details: Any,
        request: Any,
    ) -> Any:
        method = client_call_details.method
        name = method.decode() if isinstance(method, bytes) else str(method)
        self.calls[name] = self.calls.get(name, 0) + 1
        return await continuation(client_call_details, request)

    def __getitem__(self, method: str) -> int:
        return self.calls.get(method, 0)


class Link:
    """A TCP proxy between the peer and auth that a test can cut and restore."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = upstream_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(sink)
            sink.close()


@dataclass
class _Metadatum:
    key: str
    value: str


class _Context:
    def __init__(self, token: str) -> None:
        self._metadata = [_Metadatum("authorization", f"Bearer {token}")]

    def invocation_metadata(self) -> list[_Metadatum]:
        return self._metadata


@dataclass
class Peer:
    """A peer service's caller authentication, with its feed running and its calls counted."""

    auth: PeerAuth
    interceptor: AuthInterceptor
    counted: CountCalls
    link: Link
    channel: grpc.aio.Channel
    task: asyncio.Task[None] | None = None

    def start_feed(self) -> None:
        self.task = asyncio.create_task(self.auth.feed.run())

    async def stop_feed(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def strict(self, token: str, method: str = STRICT_USER) -> Principal | None:
        return await self.interceptor.authorize(method, _Context(token))


async def _until(condition: Callable[[], bool], *, within: float, what: str) -> float:
    """Waits (polling every 10 ms) until `condition` holds; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within, f"not {what} within {within} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def _peer_auth(channel: grpc.aio.Channel) -> PeerAuth:
    """What wallet builds, with the feed's default timings spelled out."""
    return PeerAuth(
        channel,
        client_id="wallet",
        client_secret=SERVICE_SECRET,
        issuer="vaultpay-auth",
        audience="vaultpay",
        service="wallet",
        revocation_poll_seconds=0.25,
        revocation_wait_seconds=0.5,
        revocation_max_staleness_seconds=BOUND,
    )


@pytest.fixture
async def peer(auth: AuthStack) -> AsyncIterator[Peer]:
    link = Link(auth.port)
    await link.open()
    counted = CountCalls()
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{link.port}",
        interceptors=[counted],
        options=[
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 300),
        ],
    )
    peer_auth = _peer_auth(channel)
    rules = {
        STRICT_USER: AccessRule(min_role=Role.USER, strict=True),
        STRICT_ADMIN: AccessRule(min_role=Role.ADMIN, strict=True),
    }
    running = Peer(
        peer_auth,
        AuthInterceptor(
            rules, peer_auth.verifier, peer_auth.introspector, revocations=peer_auth.revocations
        ),
        counted,
        link,
        channel,
    )
    running.start_feed()
    await _until(peer_auth.revocations.is_fresh, within=10, what="fresh")
    try:
        yield running
    finally:
        await running.stop_feed()
        await channel.close()
        await link.cut()


async def _refused_within_bound(peer: Peer, token: str, *, reason: str = "TOKEN_REVOKED") -> float:
    """Polls the strict path from now until `token` is refused; returns how long it took."""
    started = time.monotonic()
    refused: UnauthenticatedError | None = None
    while refused is None:
        try:
            await peer.strict(token)
        except UnauthenticatedError as exc:
            refused = exc
            break
        assert time.monotonic() - started < BOUND, "the revoked token was still honoured"
        await asyncio.sleep(0.01)
    took = time.monotonic() - started
    assert refused.reason == reason
    return took


# ----- steady state ----------------------------------------------------------------------------


async def test_strict_calls_cost_no_round_trip_to_auth_in_steady_state(
    auth: AuthStack, peer: Peer
) -> None:
    user, tokens = await auth.user_with_token()
    polls_before = peer.counted[POLL]
    for _ in range(200):
        principal = await peer.strict(tokens.access_token)
        assert principal is not None
        assert (principal.user_id, principal.role) == (user.user_id, Role.USER)
    assert peer.counted[INTROSPECT] == 0
    assert peer.auth.introspector.local_answers >= 200
    # The feed is what keeps it honest: it polls in the background all along.
    await _until(lambda: peer.counted[POLL] > polls_before, within=5, what="polled")


# ----- each way a session ends -----------------------------------------------------------------


async def test_a_logged_out_token_is_refused_within_a_second(auth: AuthStack, peer: Peer) -> None:
    _, tokens = await auth.user_with_token()
    assert await peer.strict(tokens.access_token) is not None
    await auth.public.Logout(auth_pb2.LogoutRequest(), metadata=bearer(tokens))
    took = await _refused_within_bound(peer, tokens.access_token)
    assert took < BOUND
    assert peer.counted[INTROSPECT] == 0  # refused from memory, not by asking auth


async def test_a_reused_refresh_token_ends_the_family_within_a_second(
    auth: AuthStack, peer: Peer
) -> None:
    _, first = await auth.user_with_token()
    second = (
        await auth.public.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=first.refresh_token)
        )
    ).tokens
    assert await peer.strict(second.access_token) is not None
    with pytest.raises(grpc.aio.AioRpcError):
        await auth.public.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=first.refresh_token)
        )
    await _refused_within_bound(peer, second.access_token)
    await _refused_within_bound(peer, first.access_token)
    assert peer.counted[INTROSPECT] == 0


async def test_a_password_change_ends_the_other_sessions_within_a_second(
    auth: AuthStack, peer: Peer
) -> None:
    user, here = await auth.user_with_token()
    elsewhere = await auth.login(user.email)
    await auth.public.ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password=NEW_PASSWORD),
        metadata=bearer(here),
    )
    await _refused_within_bound(peer, elsewhere.access_token)
    assert await peer.strict(here.access_token) is not None  # the session that changed it
    assert peer.counted[INTROSPECT] == 0


async def test_a_deactivated_users_token_is_refused_within_a_second(
    auth: AuthStack, peer: Peer
) -> None:
    _, admin = await auth.staff("ADMIN")
    user, tokens = await auth.user_with_token()
    assert await peer.strict(tokens.access_token) is not None
    await auth.admin.DeactivateUser(
        auth_pb2.DeactivateUserRequest(user_id=user.user_id, reason="fraud review"),
        metadata=bearer(admin),
    )
    await _refused_within_bound(peer, tokens.access_token, reason="ACCOUNT_DISABLED")
    assert peer.counted[INTROSPECT] == 0


async def test_a_role_change_takes_effect_on_the_strict_path_within_a_second(
    auth: AuthStack, peer: Peer
) -> None:
    """A demoted admin's token stops working at once (its session ends with the change), and
    the next login carries the new role, which is then what the strict path sees."""
    _, super_admin = await auth.staff("SUPER_ADMIN")
    target, old = await auth.staff("ADMIN")
    assert await peer.strict(old.access_token, STRICT_ADMIN) is not None
    await auth.admin.SetUserRole(
        auth_pb2.SetUserRoleRequest(user_id=target.user_id, role=role_pb2.ROLE_USER, reason="r"),
        metadata=bearer(super_admin),
    )
    await _refused_within_bound(peer, old.access_token)
    new = await auth.login(target.email)
    principal = await peer.strict(new.access_token)
    assert principal is not None
    assert principal.role is Role.USER
    with pytest.raises(InsufficientPermissionsError, match="requires role ADMIN") as refused:
        await peer.strict(new.access_token, STRICT_ADMIN)
    assert refused.value.reason == "INSUFFICIENT_PERMISSIONS"
    assert peer.counted[INTROSPECT] == 0


# ----- a stale feed ----------------------------------------------------------------------------


async def test_a_stopped_feed_falls_back_to_introspection_past_the_bound(
    auth: AuthStack, peer: Peer
) -> None:
    _, tokens = await auth.user_with_token()
    await peer.stop_feed()
    stale_after = await _until(
        lambda: not peer.auth.revocations.is_fresh(), within=BOUND + 1, what="stale"
    )
    assert stale_after <= BOUND + 0.1
    assert await peer.strict(tokens.access_token) is not None
    assert peer.counted[INTROSPECT] == 1
    # Revoked while nobody polls: introspection sees it at once.
    await auth.public.Logout(auth_pb2.LogoutRequest(), metadata=bearer(tokens))
    with pytest.raises(UnauthenticatedError) as refused:
        await peer.strict(tokens.access_token)
    assert refused.value.reason == "TOKEN_REVOKED"
    assert peer.counted[INTROSPECT] == 2
    # Back on the feed: memory answers again.
    peer.start_feed()
    await _until(peer.auth.revocations.is_fresh, within=5, what="fresh again")
    with pytest.raises(UnauthenticatedError):
        await peer.strict(tokens.access_token)
    assert peer.counted[INTROSPECT] == 2


async def test_strict_calls_fail_closed_when_auth_is_unreachable_past_the_bound(
    auth: AuthStack, peer: Peer
) -> None:
    _, tokens = await auth.user_with_token()
    assert await peer.strict(tokens.access_token) is not None  # keys and token now cached
    await peer.link.cut()
    await _until(lambda: not peer.auth.revocations.is_fresh(), within=BOUND + 1, what="stale")
    with pytest.raises(AuthUnavailableError):
        await peer.strict(tokens.access_token)
    await peer.link.open()  # auth reachable again on the same address
    await _until(peer.auth.revocations.is_fresh, within=15, what="fresh again")
    assert await peer.strict(tokens.access_token) is not None


# ----- the feed table itself -------------------------------------------------------------------


def _sid(tokens: auth_pb2.TokenPair) -> str:
    return str(jwt.decode(tokens.access_token, options={"verify_signature": False})["sid"])


async def _drain(service: RevocationFeedService, cursor: str) -> tuple[set[str], str]:
    """One complete pass from `cursor`: the sessions it names, and where the next starts."""
    seen: set[str] = set()
    while True:
        page = await service.poll(cursor)
        seen |= {r.session_id for r in page.revocations}
        cursor = page.next_cursor.encode()
        if page.caught_up:
            return seen, cursor


async def test_a_slow_commit_below_the_readers_position_is_not_skipped(auth: AuthStack) -> None:
    """Session A is revoked first (lower sequence) but commits after session B: a reader that
    resumed after B's sequence would never see A. The horizon cursor reads A next time."""
    _, a = await auth.user_with_token()
    _, b = await auth.user_with_token()
    engine = create_engine(auth.dbs.auth_app_dsn, pool_size=3, application_name="feed-test")
    # Pages of one row, so the pass also crosses a page boundary on the way.
    service = RevocationFeedService(
        SqlRevocationFeed(engine), look_back=timedelta(minutes=20), page_size=1
    )
    revoke = text(
        "UPDATE sessions SET revoked_at = now(), revoke_reason = 'logout' WHERE id = :sid"
    )
    try:
        _, cursor = await _drain(service, "")
        async with engine.connect() as slow:
            await slow.begin()
            await slow.execute(revoke, {"sid": _sid(a)})  # takes the lower sequence number
            async with engine.begin() as fast:
                await fast.execute(revoke, {"sid": _sid(b)})
            seen, cursor = await _drain(service, cursor)
            assert _sid(b) in seen
            assert _sid(a) not in seen  # not committed yet
            await slow.commit()
        seen, cursor = await _drain(service, cursor)
        assert _sid(a) in seen
        # Settled: once no transaction older than the rows runs (the stack's own background
        # jobs write too), they are not sent again.
        started = time.monotonic()
        while seen & {_sid(a), _sid(b)}:
            assert time.monotonic() - started < 5, "settled revocations keep coming back"
            seen, cursor = await _drain(service, cursor)
    finally:
        await engine.dispose()


async def test_a_long_transaction_does_not_make_every_poll_carry_everything_again(
    auth: AuthStack,
) -> None:
    """Review of 2026-12-05: the cursor was the oldest running transaction, so while one ran
    (a migration, an operator's psql) every poll of every peer re-read every revocation
    committed since it began, and was never held. A revocation the long transaction makes
    itself is still delivered when it commits."""
    _, a = await auth.user_with_token()
    _, b = await auth.user_with_token()
    engine = create_engine(auth.dbs.auth_app_dsn, pool_size=3, application_name="feed-test")
    service = RevocationFeedService(SqlRevocationFeed(engine), look_back=timedelta(minutes=20))
    revoke = text(
        "UPDATE sessions SET revoked_at = now(), revoke_reason = 'logout' WHERE id = :sid"
    )
    try:
        _, cursor = await _drain(service, "")
        async with engine.connect() as long:
            await long.begin()
            await long.execute(revoke, {"sid": _sid(a)})  # holds an id: pins the horizon
            async with engine.begin() as other:
                await other.execute(revoke, {"sid": _sid(b)})
            seen, cursor = await _drain(service, cursor)
            assert _sid(b) in seen and _sid(a) not in seen
            for _ in range(3):  # b is settled: not sent again while `long` runs
                seen, cursor = await _drain(service, cursor)
                assert _sid(b) not in seen
            await long.commit()
        seen, cursor = await _drain(service, cursor)
        assert _sid(a) in seen
    finally:
        await engine.dispose()


async def test_a_revocation_enters_the_feed_when_its_transaction_commits(
    auth: AuthStack,
) -> None:
    """Review of 2026-12-05: the feed row was stamped when the revoking UPDATE ran, so a
    transaction open longer than the readers' look-back (an operator's psql) committed a row
    already outside every window: never delivered. It is written and stamped at COMMIT."""
    _, tokens = await auth.user_with_token()
    engine = create_engine(auth.dbs.auth_app_dsn, pool_size=2, application_name="feed-test")
    revoke = text(
        "UPDATE sessions SET revoked_at = now(), revoke_reason = 'logout' WHERE id = :sid"
    )
    feed_row = text(
        "SELECT recorded_at FROM session_revocations WHERE session_id = CAST(:sid AS uuid)"
    )
    try:
        async with engine.connect() as slow:
            await slow.begin()
            await slow.execute(revoke, {"sid": _sid(tokens)})
            assert (await slow.execute(feed_row, {"sid": _sid(tokens)})).first() is None
            after_update = (await slow.execute(text("SELECT clock_timestamp()"))).scalar_one()
            await slow.commit()
        async with engine.connect() as conn:
            recorded = (await conn.execute(feed_row, {"sid": _sid(tokens)})).scalar_one()
        assert recorded > after_update
        service = RevocationFeedService(SqlRevocationFeed(engine), look_back=timedelta(minutes=20))
        seen, _ = await _drain(service, "")
        assert _sid(tokens) in seen
    finally:
        await engine.dispose()


async def test_a_first_poll_answers_every_revocation_within_the_look_back(
    auth: AuthStack,
) -> None:
    _, tokens = await auth.user_with_token()
    await auth.public.Logout(auth_pb2.LogoutRequest(), metadata=bearer(tokens))
    engine = create_engine(auth.dbs.auth_app_dsn, pool_size=1, application_name="feed-test")
    try:
        recent = RevocationFeedService(SqlRevocationFeed(engine), look_back=timedelta(minutes=20))
        seen, _ = await _drain(recent, "")
        assert _sid(tokens) in seen
        none = RevocationFeedService(SqlRevocationFeed(engine), look_back=timedelta(0))
        seen, _ = await _drain(none, "")
        assert _sid(tokens) not in seen
    finally:
        await engine.dispose()


async def test_a_cursor_auth_never_returned_makes_the_feed_start_over(auth: AuthStack) -> None:
    identity = ServiceTokenProvider(auth.channel, "wallet", SERVICE_SECRET)
    source = GrpcRevocationSource(auth.channel, identity, timeout=BOUND)
    with pytest.raises(FeedCursorRejectedError):  # auth answered INVALID_ARGUMENT
        await source("v1.not-a-cursor", 0.0)
    assert (await source("", 0.0)).caught_up


# ----- long poll -------------------------------------------------------------------------------


async def _caught_up_cursor(source: GrpcRevocationSource) -> str:
    cursor, page = "", await source("", 0.0)
    while not page.caught_up:
        cursor = page.next_cursor
        page = await source(cursor, 0.0)
    return page.next_cursor


async def test_a_held_poll_is_answered_when_a_revocation_commits(auth: AuthStack) -> None:
    """auth holds a poll with nothing new and answers it from the revoking COMMIT's NOTIFY,
    long before its wait ends; `waited` says how long it held the poll. A logout that commits
    before auth's first read is answered at once (waited 0) and proves nothing about the
    wake-up: the test then tries again, with a deadline."""
    identity = ServiceTokenProvider(auth.channel, "wallet", SERVICE_SECRET)
    source = GrpcRevocationSource(auth.channel, identity, timeout=BOUND)
    deadline = time.monotonic() + 60
    while True:
        _, tokens = await auth.user_with_token()
        cursor = await _caught_up_cursor(source)
        started = time.monotonic()
        held = asyncio.create_task(source(cursor, 20.0))
        await auth.public.Logout(auth_pb2.LogoutRequest(), metadata=bearer(tokens))
        page = await held
        took = time.monotonic() - started
        assert _sid(tokens) in {r.session_id for r in page.revocations}
        assert took < 20.0, "the poll was answered by its wait, not by the revocation"
        if page.waited > 0:
            assert page.waited <= took
            return
        assert time.monotonic() < deadline, "every logout beat auth's first read"


async def test_a_held_poll_with_nothing_new_ends_with_its_wait(auth: AuthStack) -> None:
    identity = ServiceTokenProvider(auth.channel, "wallet", SERVICE_SECRET)
    source = GrpcRevocationSource(auth.channel, identity, timeout=BOUND)
    cursor = await _caught_up_cursor(source)
    page = await source(cursor, 0.3)
    assert page.caught_up and not page.revocations
    assert page.waited >= 0.29


async def test_an_idle_peer_is_answered_by_held_polls(auth: AuthStack, peer: Peer) -> None:
    """About two polls a second (each held 0.5 s), not four, and the set stays fresh."""
    before, started = peer.counted[POLL], time.monotonic()
    await _until(lambda: peer.counted[POLL] >= before + 4, within=10, what="polled 4 times")
    took = time.monotonic() - started
    assert took >= 3 * 0.5 * 0.9  # three whole holds at least between the first and fourth
    assert peer.auth.revocations.is_fresh()


async def test_a_peer_that_never_completed_a_poll_asks_auth_on_every_call(
    auth: AuthStack,
) -> None:
    """Before its first complete poll a peer may not know revocations made before it started:
    a non-strict call is decided by IntrospectToken, as a strict one is."""
    counted = CountCalls()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{auth.port}", interceptors=[counted])
    peer_auth = _peer_auth(channel)
    rules = {LENIENT_USER: AccessRule(min_role=Role.USER)}
    interceptor = AuthInterceptor(
        rules, peer_auth.verifier, peer_auth.introspector, revocations=peer_auth.revocations
    )
    try:
        _, tokens = await auth.user_with_token()
        await auth.public.Logout(auth_pb2.LogoutRequest(), metadata=bearer(tokens))
        with pytest.raises(UnauthenticatedError) as refused:
            await interceptor.authorize(LENIENT_USER, _Context(tokens.access_token))
        assert refused.value.reason == "TOKEN_REVOKED"
        assert counted[INTROSPECT] == 1
        await peer_auth.feed.poll_once()
        _, live = await auth.user_with_token()
        assert await interceptor.authorize(LENIENT_USER, _Context(live.access_token)) is not None
        assert counted[INTROSPECT] == 1  # established: answered from memory
    finally:
        await channel.close()


async def test_a_read_gives_the_rows_as_the_database_holds_them(auth: AuthStack) -> None:
    _, tokens = await auth.user_with_token()
    await auth.public.Logout(auth_pb2.LogoutRequest(), metadata=bearer(tokens))
    engine = create_engine(auth.dbs.auth_app_dsn, pool_size=1, application_name="feed-test")
    feed = SqlRevocationFeed(engine)
    try:
        read = await feed.read(FeedCursor(), limit=100_000, look_back=timedelta(minutes=20))
        async with engine.connect() as conn:
            stored = (
                await conn.execute(
                    text(
                        "SELECT xact_id::text AS x, sequence, user_id::text AS u, revoked_at, "
                        "reason FROM session_revocations WHERE session_id = :sid"
                    ),
                    {"sid": _sid(tokens)},
                )
            ).one()
        (row,) = [r for r in read.rows if r.revoked.session_id == _sid(tokens)]
        assert (row.xact_id, row.sequence) == (int(stored.x), stored.sequence)
        assert row.revoked.user_id == stored.u
        assert row.revoked.revoked_at == stored.revoked_at
        assert row.revoked.revoked_at.tzinfo is not None
        assert row.revoked.revoke_reason == stored.reason == "logout"
        assert [(r.xact_id, r.sequence) for r in read.rows] == sorted(
            (r.xact_id, r.sequence) for r in read.rows
        )
        assert 0 < read.horizon <= read.newest
        # Mid-pass, after that row: only what follows it, in the same order.
        after = await feed.read(
            FeedCursor(read.horizon, (row.xact_id, row.sequence)),
            limit=100_000,
            look_back=timedelta(minutes=20),
        )
        position = (row.xact_id, row.sequence)
        expected = [
            (r.xact_id, r.sequence) for r in read.rows if (r.xact_id, r.sequence) > position
        ]
        got = [(r.xact_id, r.sequence) for r in after.rows]
        assert got[: len(expected)] == expected  # (anything revoked since comes after)
        assert all(key > position for key in got)
        # The limit is the statement's.
        one = await feed.read(FeedCursor(), limit=1, look_back=timedelta(minutes=20))
        assert len(one.rows) == 1
        assert one.rows[0].sequence == read.rows[0].sequence
    finally:
        await engine.dispose()


async def test_a_read_at_the_top_of_the_cursor_range_answers_nothing(auth: AuthStack) -> None:
    top = 2**64 - 1
    engine = create_engine(auth.dbs.auth_app_dsn, pool_size=1, application_name="feed-test")
    feed = SqlRevocationFeed(engine)
    try:
        for cursor in (FeedCursor(top), FeedCursor(top, (top, top))):
            read = await feed.read(cursor, limit=10, look_back=timedelta(minutes=20))
            assert read.rows == []
            assert 0 < read.horizon <= read.newest < top
    finally:
        await engine.dispose()


async def test_a_read_without_a_database_is_database_unavailable(auth: AuthStack) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    dsn = make_url(auth.dbs.auth_app_dsn).set(port=closed)
    engine = create_engine(
        dsn.render_as_string(hide_password=False), pool_size=1, application_name="feed-test"
    )
    try:
        with pytest.raises(DatabaseUnavailableError):
            await SqlRevocationFeed(engine).read(
                FeedCursor(), limit=10, look_back=timedelta(minutes=20)
            )
    finally:
        await engine.dispose()


async def test_a_connection_lost_between_reads_is_replaced_without_a_failed_read(
    auth: AuthStack,
) -> None:
    """PostgreSQL ends the feed's pooled connection between two polls: once the driver has
    read its end, the pool replaces it at checkout and the next read is served on a new
    connection (it used to fail one read UNAVAILABLE)."""
    engine = create_engine(auth.dbs.auth_app_dsn, pool_size=1, application_name="feed-lost")
    killer = create_engine(auth.dbs.auth_app_dsn, pool_size=1, application_name="feed-killer")
    feed = SqlRevocationFeed(engine)
    look_back = timedelta(minutes=20)
    try:
        await feed.read(FeedCursor(), limit=10, look_back=look_back)  # pooled, prepared
        drivers = await pooled_drivers(engine, 1)
        async with killer.connect() as conn:
            ended = (
                await conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = 'feed-lost'"
                    )
                )
            ).scalar_one()
        assert ended == 1

        await until_seen_ended(drivers)
        read = await feed.read(FeedCursor(), limit=10, look_back=look_back)  # a new connection
        assert read.horizon > 0
    finally:
        await engine.dispose()
        await killer.dispose()


# ----- a withdrawn signing key -----------------------------------------------------------------


def _kid(tokens: auth_pb2.TokenPair) -> str:
    return str(jwt.get_unverified_header(tokens.access_token)["kid"])


async def _withdraw(auth: AuthStack, kid: str) -> None:
    """The operator's command, off the event loop (the peer's feed goes on meanwhile)."""
    result = await asyncio.to_thread(auth.cli, "withdraw-signing-key", "--kid", kid)
    assert result.returncode == 0, result.stderr


async def _standby_kid(auth: AuthStack) -> str:
    engine = create_engine(auth.dbs.auth_app_dsn, pool_size=1, application_name="feed-test")
    try:
        async with engine.connect() as conn:
            return str(
                (
                    await conn.execute(
                        text(
                            "SELECT kid FROM signing_keys WHERE retired_at IS NULL"
                            " AND not_before >= '9999-01-01' ORDER BY created_at LIMIT 1"
                        )
                    )
                ).scalar_one()
            )
    finally:
        await engine.dispose()


async def test_a_withdrawn_keys_tokens_are_refused_within_a_second(
    auth: AuthStack, peer: Peer
) -> None:
    """A leaked private key: once the operator withdraws it, a peer refuses every token it
    signed, one verified and cached before included, on a lenient call as on a strict one,
    within the feed's bound and from memory; its key set alone would take up to a minute."""
    user, tokens = await auth.user_with_token()
    lenient = AuthInterceptor(
        {LENIENT_USER: AccessRule(min_role=Role.USER)},
        peer.auth.verifier,
        peer.auth.introspector,
        revocations=peer.auth.revocations,
    )
    assert await lenient.authorize(LENIENT_USER, _Context(tokens.access_token)) is not None
    assert await peer.strict(tokens.access_token) is not None
    await _withdraw(auth, _kid(tokens))
    started = time.monotonic()
    refused: UnauthenticatedError | None = None
    while refused is None:
        try:
            await lenient.authorize(LENIENT_USER, _Context(tokens.access_token))
        except UnauthenticatedError as exc:
            refused = exc
            break
        assert time.monotonic() - started < BOUND, "the withdrawn key's token was honoured"
        await asyncio.sleep(0.01)
    assert refused.reason == "TOKEN_INVALID"
    with pytest.raises(UnauthenticatedError) as strict_refusal:
        await peer.strict(tokens.access_token)
    assert strict_refusal.value.reason == "TOKEN_INVALID"
    assert peer.counted[INTROSPECT] == 0  # refused from memory, not by asking auth
    # The key that took over was published before: its tokens pass at once.
    new = await auth.login(user.email)
    assert _kid(new) != _kid(tokens)
    assert await lenient.authorize(LENIENT_USER, _Context(new.access_token)) is not None


async def test_a_held_poll_is_answered_when_a_key_is_withdrawn(auth: AuthStack) -> None:
    """The withdrawal's COMMIT wakes held polls as a revocation's does, and every answer from
    then on names the key. (The standby is withdrawn: a new one is published, nothing else
    changes.) A withdrawal that commits before auth's first read leaves the poll held for
    its whole wait, which proves nothing about the wake-up: the test then tries again."""
    identity = ServiceTokenProvider(auth.channel, "wallet", SERVICE_SECRET)
    source = GrpcRevocationSource(auth.channel, identity, timeout=BOUND)
    wait = 8.0
    for _ in range(3):
        kid = await _standby_kid(auth)
        cursor = await _caught_up_cursor(source)
        started = time.monotonic()
        held = asyncio.create_task(source(cursor, wait))
        await _withdraw(auth, kid)  # a process to start: the poll is held by then, mostly
        page = await held
        took = time.monotonic() - started
        assert kid in page.withdrawn_keys
        if page.waited < wait * 0.9:
            assert took < wait
            assert kid in (await source(page.next_cursor, 0.0)).withdrawn_keys
            return
    raise AssertionError("every withdrawal beat auth's first read of the held poll")
