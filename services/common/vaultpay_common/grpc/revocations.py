"""The strict path without a round trip: auth's revocations, kept in memory with a freshness bound.

A strict RPC must refuse a token whose session was revoked (logout, refresh-token reuse,
password change, role change, deactivation: each ends the user's sessions in auth). Asking
auth (IntrospectToken) on every call costs a network round trip and a database query per
money movement. Instead each service long-polls auth's revocation feed and keeps the revoked
session ids in a `RevocationSet`:

    revoked = RevocationSet(max_staleness=1.0, retention=16 * 60)
    feed = RevocationFeed(source, revoked, poll_interval=0.25, wait=0.5)  # job: feed.run()
    introspector = FeedIntrospector(verifier, revoked, fallback=GrpcTokenIntrospector(...))

auth holds a poll that has nothing new for up to `wait` seconds and answers it as soon as a
revocation commits, so a revocation usually reaches every service within milliseconds, and an
idle service asks about twice a second. (An auth that does not hold polls is simply asked
every `poll_interval`.)

Freshness is measured on this process's own monotonic clock from the moment a poll was *sent*,
plus how long auth says it held the poll before reading its answer (`waited`, a duration on
auth's clock, capped by the time the answer took to arrive): auth reads the feed after
receiving the poll, so a complete answer holds every revocation committed before that moment,
whatever the network or auth's wall clock did. While the last complete poll is younger than
`max_staleness`, the strict check is a dictionary lookup; once it is older (auth unreachable,
the feed broken, this process too busy to poll), every strict call falls back to
IntrospectToken, which fails closed (UNAVAILABLE) when auth cannot answer either. So a revoked
token is refused at most `max_staleness` after the revocation committed, and usually a few
milliseconds after.

Until the first complete poll the set may lack revocations made before this process started,
so it is not `established`, and every call, strict or not, asks auth
(vaultpay_common.grpc.authz).

Why the session id and the token's own role are enough: every change that must take effect at
once (logout, reuse, password change, deactivation, role change) revokes the user's sessions in
the same transaction, and no session outlives a role change, so a token whose session is not
revoked carries its user's current role and an active user.

The feed also names the signing keys auth withdrew (an operator's emergency: a leaked private
key); `RevocationFeed` hands them to the verifier (`TokenVerifier.forget_keys`), which refuses
their tokens from then on, cached ones too: within the same bound as a revocation, where the
verifier's own key-set refresh alone would take up to a minute.

A revoked session is forgotten `retention` seconds after it was received, which must outlast
the longest-lived access token (plus clock leeway): later, every token of it has expired.

The same set is what the auth interceptor checks on *every* user call, strict or not (a known
revocation is final whatever the feed's freshness), and what ends an open stream: `watch`
calls back when a session is recorded as revoked, so a stream waits for that instead of
polling (vaultpay_common.grpc.authz).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from vaultpay_common.grpc.tokens import (
    ACCESS_TOKEN_TYPE,
    Introspection,
    TokenClaims,
    TokenIntrospector,
)

__all__ = [
    "ClaimsVerifier",
    "FeedCursorRejectedError",
    "FeedIntrospector",
    "KeysWithdrawn",
    "Revocation",
    "RevocationFeed",
    "RevocationPage",
    "RevocationSet",
    "RevocationSource",
    "SessionRevocations",
]

log = logging.getLogger(__name__)

Monotonic = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Revocation:
    """A revoked session and the UPPER_SNAKE reason its tokens are refused with."""

    session_id: str
    reason: str = "TOKEN_REVOKED"


@dataclass(frozen=True, slots=True)
class RevocationPage:
    """One answer of the feed: `caught_up` when it completes everything up to the poll plus
    `waited`, the seconds auth held it before reading."""

    revocations: list[Revocation]
    next_cursor: str
    caught_up: bool
    waited: float = 0.0
    # The signing keys (kid) auth withdrew within the feed's look-back.
    withdrawn_keys: tuple[str, ...] = ()


# Reads one page: (cursor, how long auth may hold a poll with nothing new, in seconds).
RevocationSource = Callable[[str, float], Awaitable[RevocationPage]]
# Told the withdrawn signing keys of every page (TokenVerifier.forget_keys).
KeysWithdrawn = Callable[[Iterable[str]], None]


class ClaimsVerifier(Protocol):
    """What FeedIntrospector needs of a TokenVerifier."""

    async def verify(self, token: str) -> TokenClaims: ...


RevokedCallback = Callable[[str], None]


class SessionRevocations(Protocol):
    """What the auth interceptor reads of the revoked sessions it holds in memory."""

    def refusal(self, session_id: str) -> str | None: ...

    def is_established(self) -> bool: ...

    def watch(self, session_id: str, on_revoked: RevokedCallback) -> Callable[[], None]: ...


class FeedCursorRejectedError(Exception):
    """auth no longer accepts our cursor: the feed starts over from an empty one."""


class RevocationSet:
    """Revoked sessions in memory, and how fresh that knowledge is.

    `clock` is a monotonic clock (seconds); tests pass their own to move time. Freshness is
    also judged by the wall clock (`wall`): CLOCK_MONOTONIC stands still while the VM is
    paused (a hypervisor pause, a live migration's downtime), so a copy confirmed just before
    a five-minute pause read as fresh on resume, without the revocations made meanwhile. Both
    ages must be within the bound (a wall clock stepped forward only sends a call to the
    fallback for a moment: fail closed). The confirmed moment itself is taken on both clocks
    too (`confirm`): a pause while a poll was outstanding must not make its answer new.
    """

    def __init__(
        self,
        *,
        max_staleness: float,
        retention: float,
        clock: Monotonic = time.monotonic,
        wall: Monotonic = time.time,
    ) -> None:
        if max_staleness <= 0 or retention <= 0:
            raise ValueError("max_staleness and retention must be positive")
        self._max_staleness = max_staleness
        self._retention = retention
        self._clock = clock
        self._wall = wall
        self._confirmed_wall: float | None = None
        self._reasons: dict[str, str] = {}
        self._forget_at: OrderedDict[str, float] = OrderedDict()  # oldest heard first
        self._confirmed_at: float | None = None
        self._watchers: dict[str, set[RevokedCallback]] = {}

    def record(self, revocations: Iterable[Revocation]) -> None:
        """Remembers revoked sessions; one heard of again has its retention restarted. One
        entry per session, however often it is heard of: auth delivers a row again on every
        poll while an older transaction pins the feed's horizon, four times a second, and
        each delivery used to queue an entry more (review of 2026-12-05: tens of MB in
        minutes while a long transaction ran)."""
        now = self._clock()
        forget_at = now + self._retention
        for revocation in revocations:
            self._reasons[revocation.session_id] = revocation.reason
            # The clock is monotonic: the latest heard is always the last to be forgotten.
            self._forget_at[revocation.session_id] = forget_at
            self._forget_at.move_to_end(revocation.session_id)
            for on_revoked in self._watchers.pop(revocation.session_id, ()):
                on_revoked(revocation.reason)
        self._prune(now)

    def wall_time(self) -> float:
        """This set's wall clock now: what a feed pass notes as it starts (`confirm`)."""
        return self._wall()

    def confirm(self, as_of: float, *, as_of_wall: float | None = None) -> None:
        """Everything revoked before `as_of` (this clock) has been recorded.

        `as_of_wall` is the same moment measured on the wall clock (the pass's start read on
        it, plus auth's hold). The copy counts as confirmed at the older of that and `as_of`
        carried over to the wall clock (`wall() - (clock() - as_of)`): the carry-over counts
        monotonic time only, which stands still while the VM is paused, so a pause while a
        poll was outstanding (nearly always: polls are held, and restart at once) stamped the
        copy confirmed *now* on the wall clock on resume, though auth had answered before the
        pause and the revocations committed during it were never seen (review of 2026-12-05).
        Either clock can only make the copy older (a wall clock stepped forward mid-pass
        sends strict calls to the fallback until the next pass: fail closed)."""
        now = self._clock()
        if self._confirmed_at is None or as_of > self._confirmed_at:
            self._confirmed_at = as_of
            confirmed_wall = self._wall() - (now - as_of)  # `as_of` on the wall clock
            if as_of_wall is not None:
                confirmed_wall = min(confirmed_wall, as_of_wall)
            self._confirmed_wall = confirmed_wall
        self._prune(now)

    def is_fresh(self) -> bool:
        confirmed, confirmed_wall = self._confirmed_at, self._confirmed_wall
        if confirmed is None or confirmed_wall is None:
            return False
        return (
            self._clock() - confirmed <= self._max_staleness
            and self._wall() - confirmed_wall <= self._max_staleness
        )

    def is_established(self) -> bool:
        """True once a complete poll was recorded: before, revocations made before this
        process started may be missing, whatever the set holds."""
        return self._confirmed_at is not None

    def staleness(self) -> float | None:
        """Seconds since the knowledge was last confirmed complete; None if it never was."""
        return None if self._confirmed_at is None else self._clock() - self._confirmed_at

    def refusal(self, session_id: str) -> str | None:
        """The reason a token of this session is refused, or None if it is not revoked."""
        return self._reasons.get(session_id)

    def watch(self, session_id: str, on_revoked: RevokedCallback) -> Callable[[], None]:
        """Calls `on_revoked(reason)` once, when `session_id` is next recorded as revoked.

        Returns the function that cancels the watch (call it when the watcher goes away). A
        session already revoked is not reported: the caller also checks `refusal`, with no
        await between the two, so nothing can be recorded in between unseen. The callback runs inside
        `record`, so it must only note the news (set a future), never block or raise.
        """
        watchers = self._watchers.setdefault(session_id, set())
        watchers.add(on_revoked)

        def unwatch() -> None:
            current = self._watchers.get(session_id)
            if current is not None:
                current.discard(on_revoked)
                if not current:
                    del self._watchers[session_id]

        return unwatch

    def watching(self) -> int:
        """How many watches are open (for tests: a stream that ended left none behind)."""
        return sum(len(w) for w in self._watchers.values())

    def __len__(self) -> int:
        return len(self._reasons)

    def _prune(self, now: float) -> None:
        while self._forget_at:
            session_id, forget_at = next(iter(self._forget_at.items()))
            if forget_at > now:
                break
            del self._forget_at[session_id]
            del self._reasons[session_id]


class RevocationFeed:
    """Keeps a RevocationSet current by long-polling auth's feed: each pass asks auth to hold
    it up to `wait` seconds while there is nothing new, and passes start at most every
    `poll_interval` seconds.

    A poll is a pass: pages until one is `caught_up`, then the set is confirmed as of the
    moment the pass's first page was sent plus how long auth held that page (never later
    than the answer's arrival), read on the monotonic and on the wall clock, the older of the
    two. A pass that fails part-way is started again from the last complete pass's cursor
    (its pages' revocations are kept: knowing more is safe).

    Every page also names the signing keys auth withdrew lately; `on_keys_withdrawn` (the
    verifier's `forget_keys`) hears them as each page arrives, so a compromised key's tokens,
    cached ones too, are refused from then on rather than at the key set's next refresh.
    """

    def __init__(
        self,
        source: RevocationSource,
        revoked: RevocationSet,
        *,
        poll_interval: float,
        wait: float = 0.0,
        max_pages_per_pass: int = 1000,
        on_keys_withdrawn: KeysWithdrawn | None = None,
        clock: Monotonic = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if poll_interval <= 0 or wait < 0:
            raise ValueError("poll_interval must be positive and wait not negative")
        self._source = source
        self._revoked = revoked
        self._on_keys_withdrawn = on_keys_withdrawn
        self._interval = poll_interval
        self._wait = wait
        self._max_pages = max_pages_per_pass
        self._clock = clock
        self._sleep = sleep
        self._cursor = ""
        self._failing = False
        self._live = False
        self.polls = 0

    async def poll_once(self) -> None:
        """One complete pass; raises whatever the source raised (the set stays unconfirmed)."""
        # Both clocks: a VM paused mid-pass stops the monotonic one (RevocationSet.confirm).
        started, started_wall = self._clock(), self._revoked.wall_time()
        cursor = self._cursor
        held = 0.0
        try:
            for number in range(self._max_pages):
                page = await self._source(cursor, self._wait if number == 0 else 0.0)
                if number == 0:
                    held = page.waited
                if page.withdrawn_keys and self._on_keys_withdrawn is not None:
                    self._on_keys_withdrawn(page.withdrawn_keys)
                self._revoked.record(page.revocations)
                cursor = page.next_cursor
                if page.caught_up:
                    break
            else:
                raise RuntimeError("the revocation feed did not catch up; retrying the pass")
        except FeedCursorRejectedError:
            self._cursor = ""  # start over: everything within auth's look-back window
            raise
        self._cursor = cursor
        # auth read the first page at least `held` after our send (durations, not clocks);
        # never later than now, whatever auth claims; on each clock.
        held = max(held, 0.0)
        self._revoked.confirm(min(started + held, self._clock()), as_of_wall=started_wall + held)
        self.polls += 1

    async def run(self) -> None:
        """Polls until cancelled; failures are logged once per outage, never raised."""
        while True:
            started = self._clock()
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                if not self._failing:
                    log.warning(
                        "revocation feed failed; strict calls ask auth until it recovers",
                        exc_info=True,
                    )
                self._failing = True
            else:
                if self._failing or not self._live:
                    log.info("revocation feed is live; strict calls answer from memory")
                self._failing, self._live = False, True
            await self._sleep(max(0.0, self._interval - (self._clock() - started)))


class FeedIntrospector:
    """A TokenIntrospector that answers from the RevocationSet while it is fresh, and from
    `fallback` (IntrospectToken) while it is not.

    The interceptor has verified the token before asking, so `verifier.verify` here is a
    cache hit. `local_answers` and `fallbacks` count the two paths (for tests and metrics).
    """

    def __init__(
        self, verifier: ClaimsVerifier, revoked: RevocationSet, fallback: TokenIntrospector
    ) -> None:
        self._verifier = verifier
        self._revoked = revoked
        self._fallback = fallback
        self.local_answers = 0
        self.fallbacks = 0

    async def introspect(self, token: str) -> Introspection:
        if not self._revoked.is_fresh():
            self.fallbacks += 1
            return await self._fallback.introspect(token)
        claims = await self._verifier.verify(token)
        self.local_answers += 1
        if claims.token_type != ACCESS_TOKEN_TYPE or claims.role is None:
            return Introspection(active=False, reason="TOKEN_INVALID")
        refused = self._revoked.refusal(claims.session_id)
        if refused is not None:
            return Introspection(active=False, reason=refused)
        return Introspection(
            active=True, role=claims.role, user_id=claims.subject, session_id=claims.session_id
        )
