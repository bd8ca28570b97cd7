"""The strict path from memory (vaultpay_common.grpc.revocations), on an injected clock: what is
revoked is refused, knowledge older than the freshness bound is never trusted (the call asks
auth instead), and a feed pass is only confirmed as of the moment it was sent plus how long
auth held it."""

from __future__ import annotations

import asyncio
import logging
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from tests.support import peer_service_fields
from vaultpay_common.config import PeerServiceSettings
from vaultpay_common.context import Role
from vaultpay_common.grpc.revocations import (
    FeedCursorRejectedError,
    FeedIntrospector,
    Revocation,
    RevocationFeed,
    RevocationPage,
    RevocationSet,
)
from vaultpay_common.grpc.tokens import ACCESS_TOKEN_TYPE, Introspection, TokenClaims

BOUND = 1.0
RETENTION = 990.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Verifier:
    """Stands for the TokenVerifier: the token's text is its session id."""

    def __init__(self, role: Role | None = Role.USER, token_type: str = ACCESS_TOKEN_TYPE) -> None:
        self.role = role
        self.token_type = token_type

    async def verify(self, token: str) -> TokenClaims:
        return TokenClaims(
            subject="user-1",
            token_type=self.token_type,
            role=self.role,
            session_id=token,
            token_id="jti",
            expires_at=2e9,
        )


class Auth:
    """Stands for IntrospectToken: counts the round trips the strict path would cost."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def introspect(self, token: str) -> Introspection:
        self.calls.append(token)
        return Introspection(active=True, role=Role.ADMIN, user_id="user-1", session_id=token)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def revoked(clock: Clock) -> RevocationSet:
    return RevocationSet(max_staleness=BOUND, retention=RETENTION, clock=clock)


def _introspector(
    revoked: RevocationSet,
    auth: Auth,
    *,
    role: Role | None = Role.USER,
    token_type: str = ACCESS_TOKEN_TYPE,
) -> FeedIntrospector:
    return FeedIntrospector(Verifier(role, token_type), revoked, auth)


# ----- RevocationSet ---------------------------------------------------------------------------


def test_a_set_never_confirmed_is_not_fresh(revoked: RevocationSet) -> None:
    assert not revoked.is_fresh()
    assert revoked.staleness() is None


def test_a_set_is_established_by_its_first_confirmation_and_stays_so(
    revoked: RevocationSet, clock: Clock
) -> None:
    revoked.record([Revocation("s1")])
    assert not revoked.is_established()  # revocations before this process may be missing
    revoked.confirm(clock.now)
    clock.advance(BOUND * 10)
    assert revoked.is_established() and not revoked.is_fresh()


def test_freshness_lasts_exactly_the_bound_from_the_confirmed_moment(
    revoked: RevocationSet, clock: Clock
) -> None:
    revoked.confirm(clock.now - 0.4)  # the pass was sent 0.4 s ago
    assert revoked.is_fresh()
    clock.advance(0.6)
    assert revoked.is_fresh()
    clock.advance(0.001)
    assert not revoked.is_fresh()


def test_an_older_confirmation_never_moves_freshness_back(
    revoked: RevocationSet, clock: Clock
) -> None:
    revoked.confirm(clock.now)
    revoked.confirm(clock.now - 5)
    assert revoked.staleness() == 0


def test_a_revoked_session_is_refused_with_its_reason_until_retention_ends(
    revoked: RevocationSet, clock: Clock
) -> None:
    revoked.record([Revocation("s1"), Revocation("s2", "ACCOUNT_DISABLED")])
    assert (revoked.refusal("s1"), revoked.refusal("s2")) == ("TOKEN_REVOKED", "ACCOUNT_DISABLED")
    assert revoked.refusal("s3") is None
    clock.advance(RETENTION - 1)
    revoked.confirm(clock.now)
    assert len(revoked) == 2
    clock.advance(1)
    revoked.confirm(clock.now)
    assert len(revoked) == 0
    assert revoked.refusal("s1") is None


def test_hearing_of_a_revocation_again_restarts_its_retention(
    revoked: RevocationSet, clock: Clock
) -> None:
    revoked.record([Revocation("s1")])
    clock.advance(RETENTION - 10)
    revoked.record([Revocation("s1")])
    clock.advance(20)
    revoked.confirm(clock.now)
    assert revoked.refusal("s1") == "TOKEN_REVOKED"


def test_a_revocation_heard_again_and_again_is_kept_once(
    revoked: RevocationSet, clock: Clock
) -> None:
    """auth delivers the same rows on every poll while an older transaction pins its feed's
    horizon (four polls a second): each delivery queued an entry more, without bound."""
    revoked.record([Revocation("s1"), Revocation("s2")])
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(20_000):
            revoked.record([Revocation("s1"), Revocation("s2")])
            clock.advance(0.01)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024  # it was ~3 MB: an entry per delivery
    revoked.record([Revocation("s1")])
    clock.advance(RETENTION - 0.005)
    revoked.confirm(clock.now)
    assert (revoked.refusal("s1"), revoked.refusal("s2")) == ("TOKEN_REVOKED", None)


def test_a_watch_is_called_once_with_the_reason_when_its_session_is_revoked(
    revoked: RevocationSet,
) -> None:
    heard: list[str] = []
    other: list[str] = []
    revoked.watch("s1", heard.append)
    revoked.watch("s2", other.append)
    revoked.record([Revocation("s1", "ACCOUNT_DISABLED")])
    assert (heard, other) == (["ACCOUNT_DISABLED"], [])
    revoked.record([Revocation("s1")])  # again: the watch has been used up
    assert heard == ["ACCOUNT_DISABLED"]
    assert revoked.watching() == 1  # s2's


def test_a_cancelled_watch_is_not_called_and_leaves_nothing_behind(
    revoked: RevocationSet,
) -> None:
    heard: list[str] = []
    unwatch = revoked.watch("s1", heard.append)
    unwatch()
    unwatch()  # twice: harmless
    revoked.record([Revocation("s1")])
    assert heard == []
    assert revoked.watching() == 0


def test_bounds_must_be_positive(clock: Clock) -> None:
    with pytest.raises(ValueError, match="positive"):
        RevocationSet(max_staleness=0, retention=RETENTION, clock=clock)


# ----- FeedIntrospector ------------------------------------------------------------------------


async def test_a_fresh_feed_answers_the_strict_path_without_asking_auth(
    revoked: RevocationSet, clock: Clock
) -> None:
    auth = Auth()
    introspector = _introspector(revoked, auth)
    revoked.confirm(clock.now)
    for _ in range(100):
        answer = await introspector.introspect("s1")
        assert answer == Introspection(
            active=True, role=Role.USER, user_id="user-1", session_id="s1"
        )
    assert auth.calls == []
    assert (introspector.local_answers, introspector.fallbacks) == (100, 0)


async def test_a_fresh_feed_refuses_a_revoked_session_with_its_reason(
    revoked: RevocationSet, clock: Clock
) -> None:
    introspector = _introspector(revoked, Auth())
    revoked.record([Revocation("s1"), Revocation("s2", "ACCOUNT_DISABLED")])
    revoked.confirm(clock.now)
    assert await introspector.introspect("s1") == Introspection(
        active=False, reason="TOKEN_REVOKED"
    )
    assert await introspector.introspect("s2") == Introspection(
        active=False, reason="ACCOUNT_DISABLED"
    )


async def test_a_stale_feed_asks_auth_on_every_strict_call(
    revoked: RevocationSet, clock: Clock
) -> None:
    auth = Auth()
    introspector = _introspector(revoked, auth)
    revoked.confirm(clock.now)
    clock.advance(BOUND + 0.01)
    answer = await introspector.introspect("s1")
    assert answer.role is Role.ADMIN  # auth's answer (the current role), not the token's
    await introspector.introspect("s1")
    assert auth.calls == ["s1", "s1"]
    assert introspector.fallbacks == 2


async def test_a_stale_feed_fails_closed_when_auth_cannot_answer(
    revoked: RevocationSet, clock: Clock
) -> None:
    class Down:
        async def introspect(self, token: str) -> Introspection:
            raise ConnectionError("auth is down")

    introspector = FeedIntrospector(Verifier(), revoked, Down())
    revoked.record([])  # revocations known, but never confirmed complete
    with pytest.raises(ConnectionError):
        await introspector.introspect("s1")


async def test_only_user_access_tokens_pass_the_local_check(
    revoked: RevocationSet, clock: Clock
) -> None:
    revoked.confirm(clock.now)
    introspector = _introspector(revoked, Auth(), role=None, token_type="service")
    answer = await introspector.introspect("s1")
    assert answer == Introspection(active=False, reason="TOKEN_INVALID")


# ----- RevocationFeed --------------------------------------------------------------------------


class Source:
    """A scripted feed: each call pops the next page (or raises it) and notes the cursor."""

    def __init__(
        self, clock: Clock, *pages: RevocationPage | Exception, latency: float = 0.1
    ) -> None:
        self.clock = clock
        self.pages = list(pages)
        self.cursors: list[str] = []
        self.waits: list[float] = []
        self.latency = latency

    async def __call__(self, cursor: str, wait: float) -> RevocationPage:
        self.cursors.append(cursor)
        self.waits.append(wait)
        page = self.pages.pop(0)
        self.clock.advance(self.latency + (0.0 if isinstance(page, Exception) else page.waited))
        if isinstance(page, Exception):
            raise page
        return page


def _sleeper(clock: Clock, source: Source, sleeps: list[float]) -> Callable[[float], Any]:
    """The feed's sleep: notes each pause, moves the clock, and ends the run (cancelling it)
    once the source has no page left."""

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)
        if not source.pages:
            raise asyncio.CancelledError

    return sleep


def _page(
    cursor: str, *sessions: str, caught_up: bool = True, waited: float = 0.0
) -> RevocationPage:
    return RevocationPage([Revocation(s) for s in sessions], cursor, caught_up, waited)


async def test_a_pass_is_confirmed_as_of_the_moment_its_first_page_was_sent(
    revoked: RevocationSet, clock: Clock
) -> None:
    source = Source(clock, _page("c1", "s1", caught_up=False), _page("c2", "s2"), latency=0.3)
    feed = RevocationFeed(source, revoked, poll_interval=0.25, clock=clock)
    sent = clock.now
    await feed.poll_once()
    assert source.cursors == ["", "c1"]
    assert revoked.staleness() == pytest.approx(clock.now - sent)  # 0.6 s, not 0
    assert (revoked.refusal("s1"), revoked.refusal("s2")) == ("TOKEN_REVOKED", "TOKEN_REVOKED")


async def test_a_held_pass_is_confirmed_as_of_its_send_plus_the_time_auth_held_it(
    revoked: RevocationSet, clock: Clock
) -> None:
    """auth held the first page 0.5 s before reading it: the set is complete as of then, on
    our clock, which is what keeps a long poll within the freshness bound."""
    source = Source(clock, _page("c1", waited=0.5), latency=0.1)
    feed = RevocationFeed(source, revoked, poll_interval=0.25, wait=0.5, clock=clock)
    sent = clock.now
    await feed.poll_once()
    assert source.waits == [0.5]
    assert revoked.staleness() == pytest.approx(clock.now - (sent + 0.5))  # 0.1 s: the trip


async def test_only_the_first_page_of_a_pass_may_be_held(
    revoked: RevocationSet, clock: Clock
) -> None:
    source = Source(clock, _page("c1", "s1", caught_up=False, waited=0.3), _page("c2", "s2"))
    feed = RevocationFeed(source, revoked, poll_interval=0.25, wait=0.5, clock=clock)
    sent = clock.now
    await feed.poll_once()
    assert source.waits == [0.5, 0.0]
    assert revoked.staleness() == pytest.approx(clock.now - (sent + 0.3))


async def test_a_hold_longer_than_the_trip_is_never_believed_past_the_answers_arrival(
    revoked: RevocationSet, clock: Clock
) -> None:
    """An auth whose clock runs fast (or that lies) cannot make the set fresh in the future."""
    source = Source(clock, _page("c1", waited=0.4), latency=-0.3)  # arrived 0.1 s after send
    feed = RevocationFeed(source, revoked, poll_interval=0.25, wait=0.5, clock=clock)
    await feed.poll_once()
    assert revoked.staleness() == pytest.approx(0.0)
    clock.advance(BOUND + 0.01)
    assert not revoked.is_fresh()


async def test_a_held_poll_starts_the_next_at_once(revoked: RevocationSet, clock: Clock) -> None:
    source = Source(clock, _page("c1", waited=0.5), _page("c2", waited=0.5), latency=0.01)
    sleeps: list[float] = []
    sleep = _sleeper(clock, source, sleeps)
    feed = RevocationFeed(source, revoked, poll_interval=0.25, wait=0.5, clock=clock, sleep=sleep)
    with pytest.raises(asyncio.CancelledError):
        await feed.run()
    assert sleeps == [0.0, 0.0]


async def test_every_page_tells_the_verifier_the_withdrawn_keys_as_it_arrives(
    revoked: RevocationSet, clock: Clock
) -> None:
    """A withdrawal is acted on at the page that names it, even in a pass that then fails:
    forgetting a key is as safe as knowing a revocation."""
    heard: list[list[str]] = []
    first = RevocationPage([Revocation("s1")], "c1", False, withdrawn_keys=("k-old",))
    second = RevocationPage([], "c2", True, withdrawn_keys=("k-old", "k-new"))
    source = Source(clock, first, second, _page("c3"), ConnectionError("auth went away"))
    feed = RevocationFeed(
        source,
        revoked,
        poll_interval=0.25,
        on_keys_withdrawn=lambda kids: heard.append(list(kids)),
        clock=clock,
    )
    await feed.poll_once()
    assert heard == [["k-old"], ["k-old", "k-new"]]
    await feed.poll_once()  # a page naming none is not passed on
    assert len(heard) == 2
    with pytest.raises(ConnectionError):
        await feed.poll_once()


async def test_the_next_pass_continues_from_the_cursor_of_the_last_complete_one(
    revoked: RevocationSet, clock: Clock
) -> None:
    source = Source(clock, _page("c1"), _page("c2"))
    feed = RevocationFeed(source, revoked, poll_interval=0.25, clock=clock)
    await feed.poll_once()
    await feed.poll_once()
    assert source.cursors == ["", "c1"]
    assert feed.polls == 2


async def test_a_pass_that_fails_part_way_is_not_confirmed_and_is_started_again(
    revoked: RevocationSet, clock: Clock
) -> None:
    source = Source(
        clock,
        _page("c1"),
        _page("c1-mid", "s1", caught_up=False),
        ConnectionError("auth went away"),
        _page("c1-mid-again", "s1", caught_up=False),
        _page("c2"),
    )
    feed = RevocationFeed(source, revoked, poll_interval=0.25, clock=clock)
    await feed.poll_once()
    confirmed = revoked.staleness()
    with pytest.raises(ConnectionError):
        await feed.poll_once()
    assert revoked.staleness() == pytest.approx((confirmed or 0) + 0.2)  # not confirmed anew
    assert revoked.refusal("s1") == "TOKEN_REVOKED"  # what it did learn, it keeps
    await feed.poll_once()
    assert source.cursors == ["", "c1", "c1-mid", "c1", "c1-mid-again"]


async def test_a_rejected_cursor_starts_the_feed_over(revoked: RevocationSet, clock: Clock) -> None:
    source = Source(clock, _page("c1"), FeedCursorRejectedError("bad cursor"), _page("c9"))
    feed = RevocationFeed(source, revoked, poll_interval=0.25, clock=clock)
    await feed.poll_once()
    with pytest.raises(FeedCursorRejectedError):
        await feed.poll_once()
    await feed.poll_once()
    assert source.cursors == ["", "c1", ""]


async def test_a_feed_that_never_catches_up_is_not_confirmed(
    revoked: RevocationSet, clock: Clock
) -> None:
    source = Source(clock, *[_page(f"c{i}", caught_up=False) for i in range(3)])
    feed = RevocationFeed(source, revoked, poll_interval=0.25, max_pages_per_pass=3, clock=clock)
    with pytest.raises(RuntimeError, match="did not catch up"):
        await feed.poll_once()
    assert not revoked.is_fresh()


async def test_the_feed_keeps_polling_through_an_outage_and_logs_it_once(
    revoked: RevocationSet, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    down = ConnectionError("auth is down")
    source = Source(clock, _page("c1"), down, down, down, _page("c2"), latency=0.05)
    sleeps: list[float] = []
    sleep = _sleeper(clock, source, sleeps)
    feed = RevocationFeed(source, revoked, poll_interval=0.25, clock=clock, sleep=sleep)
    with caplog.at_level(logging.INFO), pytest.raises(asyncio.CancelledError):
        await feed.run()
    assert source.cursors == ["", "c1", "c1", "c1", "c1"]
    assert sleeps == pytest.approx([0.2] * 5)  # one poll every interval, whatever it cost
    said = [(r.levelno, r.getMessage().split(";")[0]) for r in caplog.records]
    assert said == [
        (logging.INFO, "revocation feed is live"),
        (logging.WARNING, "revocation feed failed"),
        (logging.INFO, "revocation feed is live"),
    ]
    assert revoked.is_fresh()


# ----- settings --------------------------------------------------------------------------------


def _peer_settings(**feed: float) -> PeerServiceSettings:
    return PeerServiceSettings(**{**peer_service_fields(), **feed})


def test_the_feed_defaults_refuse_a_revoked_token_within_a_second() -> None:
    settings = _peer_settings()
    assert settings.revocation_feed
    assert (
        settings.revocation_poll_seconds,
        settings.revocation_wait_seconds,
        settings.revocation_max_staleness_seconds,
    ) == (0.25, 0.5, 1.0)


def test_the_feed_must_poll_more_often_than_its_freshness_bound() -> None:
    with pytest.raises(ValidationError, match="must be below revocation_max_staleness_seconds"):
        _peer_settings(revocation_poll_seconds=1.0, revocation_max_staleness_seconds=1.0)


def test_a_poll_may_not_be_held_as_long_as_the_freshness_bound() -> None:
    with pytest.raises(ValidationError, match="must be below revocation_max_staleness_seconds"):
        _peer_settings(revocation_wait_seconds=1.0, revocation_max_staleness_seconds=1.0)


def test_a_copy_confirmed_before_a_vm_pause_is_stale_on_resume() -> None:
    """CLOCK_MONOTONIC stands still while the VM is paused: by it alone a copy confirmed a
    moment before a five-minute pause read as fresh on resume, without the revocations made
    meanwhile (token review, 2026-12-04 night). The wall clock moved on: stale."""
    monotonic, wall = Clock(), Clock()
    copy = RevocationSet(max_staleness=BOUND, retention=RETENTION, clock=monotonic, wall=wall)
    copy.confirm(monotonic())
    monotonic.advance(BOUND / 4)
    wall.advance(BOUND / 4)
    assert copy.is_fresh()
    wall.advance(300)  # the pause: only the wall clock saw it
    assert not copy.is_fresh()
    copy.confirm(monotonic())  # the next complete poll
    assert copy.is_fresh()


class PausingSource:
    """A feed whose answers take `trip` seconds on both clocks, and whose next answer comes
    after a VM pause of `pause` seconds that only the wall clock sees (the poll outstanding)."""

    def __init__(self, monotonic: Clock, wall: Clock, *, trip: float, held: float) -> None:
        self.monotonic, self.wall = monotonic, wall
        self.trip, self.held = trip, held
        self.pause = 0.0
        self.answered = 0

    async def __call__(self, cursor: str, wait: float) -> RevocationPage:
        self.monotonic.advance(self.trip)
        self.wall.advance(self.trip + self.pause)
        self.pause = 0.0
        self.answered += 1
        return _page(f"c{self.answered}", waited=self.held)


async def test_a_vm_pause_while_a_poll_is_outstanding_leaves_the_copy_stale() -> None:
    """Review of 2026-12-05: a pass's confirmed moment was carried over to the wall clock by
    monotonic time alone, which stands still while the VM is paused. Paused while its poll
    was outstanding (nearly always: polls are held and restart at once), the pass stamped an
    answer auth gave before the pause as confirmed now on both clocks: fresh on resume, without
    the revocations committed meanwhile. It is confirmed as of its send plus auth's hold on the
    wall clock too: stale, until a pass made after the pause."""
    monotonic, wall = Clock(), Clock()
    copy = RevocationSet(max_staleness=BOUND, retention=RETENTION, clock=monotonic, wall=wall)
    source = PausingSource(monotonic, wall, trip=0.01, held=0.005)
    feed = RevocationFeed(source, copy, poll_interval=0.25, wait=0.5, clock=monotonic)
    await feed.poll_once()
    assert copy.is_fresh()
    source.pause = 300.0  # monotonic +0.01 s, wall +300.01 s while the poll is out
    await feed.poll_once()
    assert copy.is_established() and feed.polls == 2
    assert not copy.is_fresh()
    await feed.poll_once()  # sent after the pause
    assert copy.is_fresh()


async def test_both_clocks_agreeing_confirm_a_pass_as_of_its_send_plus_the_hold() -> None:
    """Without a pause the wall clock's reading changes nothing: fresh for the bound from the
    send plus the hold, on either clock."""
    monotonic, wall = Clock(), Clock()
    copy = RevocationSet(max_staleness=BOUND, retention=RETENTION, clock=monotonic, wall=wall)
    feed = RevocationFeed(
        PausingSource(monotonic, wall, trip=0.3, held=0.2),
        copy,
        poll_interval=0.25,
        wait=0.5,
        clock=monotonic,
    )
    await feed.poll_once()
    assert copy.staleness() == pytest.approx(0.1)
    monotonic.advance(BOUND - 0.1)
    wall.advance(BOUND - 0.1)
    assert copy.is_fresh()
    monotonic.advance(0.001)
    wall.advance(0.001)
    assert not copy.is_fresh()
