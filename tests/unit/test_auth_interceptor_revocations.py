"""The auth interceptor and the revoked sessions held in memory, on fakes and injected clocks.

Every user call is refused once its session is known to be revoked, strict or not, with the
reason auth gave; while the feed is stale a non-strict call is decided from the token (no round
trip: auth being down must not take the reads down) and a strict one asks auth. An open stream
ends with UNAUTHENTICATED when its session is revoked or its token expires, woken by the
revocation set or a timer, never by polling.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from vaultpay_common.context import Role
from vaultpay_common.errors import InsufficientPermissionsError, UnauthenticatedError
from vaultpay_common.grpc.authz import AuthInterceptor
from vaultpay_common.grpc.revocations import FeedIntrospector, Revocation, RevocationSet
from vaultpay_common.grpc.rules import AccessRule
from vaultpay_common.grpc.tokens import Introspection, TokenExpiredError, TokenVerifier

KEY = Ed25519PrivateKey.generate()
READ = "/vaultpay.test.v1.Probe/Read"  # user, not strict (GetMyWallet's rule)
STAFF_READ = "/vaultpay.test.v1.Probe/StaffRead"  # moderator+, not strict (AdminListWallets')
STRICT = "/vaultpay.test.v1.Probe/Strict"  # user, strict
INTERNAL = "/vaultpay.test.v1.Probe/Internal"
WATCH = "/vaultpay.test.v1.Probe/Watch"  # a server stream, user, not strict
RULES = {
    READ: AccessRule(min_role=Role.USER),
    STAFF_READ: AccessRule(min_role=Role.MODERATOR),
    STRICT: AccessRule(min_role=Role.USER, strict=True),
    INTERNAL: AccessRule(internal=True, callers=frozenset({"wallet"})),
    WATCH: AccessRule(min_role=Role.USER),
}
LEEWAY = 30  # the verifier's default
PATIENCE = 5.0  # how long a test waits for something before it gives up (never a sleep)


async def _jwks() -> list[dict[str, str]]:
    raw = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k", "alg": "EdDSA"}]


def _token(
    sid: str,
    *,
    role: str = "user",
    typ: str = "access",
    lifetime: int = 600,
    service: str = "wallet",
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "vaultpay-auth",
        # The kit's verifier is the callee's ("wallet"): a service token is addressed to it.
        "aud": "vaultpay:wallet" if typ == "service" else "vaultpay",
        "sub": f"service:{service}" if typ == "service" else "user-1",
        "jti": f"jti-{sid}",
        "typ": typ,
        "iat": now,
        "exp": now + lifetime,
    }
    if typ == "access":
        claims |= {"role": role, "sid": sid}
    return jwt.encode(claims, KEY, algorithm="EdDSA", headers={"kid": "k"})


def _expiry(token: str) -> float:
    return float(jwt.decode(token, options={"verify_signature": False})["exp"])


@dataclass
class _Metadatum:
    key: str
    value: str


class _Context:
    def __init__(self, token: str) -> None:
        self._metadata = [_Metadatum("authorization", f"Bearer {token}")]

    def invocation_metadata(self) -> list[_Metadatum]:
        return self._metadata


class Monotonic:
    """The revocation set's clock: moved by the test to make the feed fresh or stale."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class WallClock:
    """The interceptor's wall clock (what `exp` is measured in), moved by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Timer:
    """The interceptor's `sleep`: records what it was asked and returns when the test fires it."""

    def __init__(self) -> None:
        self.asked: list[float] = []
        self._fired = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        await self._fired.wait()
        self._fired.clear()

    def fire(self) -> None:
        self._fired.set()


class Auth:
    """IntrospectToken: counts the round trips and answers what the test set."""

    def __init__(self) -> None:
        self.calls = 0
        self.answer = Introspection(active=True, role=Role.USER)

    async def introspect(self, token: str) -> Introspection:
        self.calls += 1
        return self.answer


@dataclass
class Kit:
    interceptor: AuthInterceptor
    revoked: RevocationSet
    monotonic: Monotonic
    wall: WallClock
    timer: Timer
    auth: Auth

    def fresh(self) -> None:
        self.revoked.confirm(self.monotonic.now)

    def stale(self) -> None:
        self.revoked.confirm(self.monotonic.now)
        self.monotonic.now += 1.5

    async def call(self, method: str, token: str) -> Any:
        return await self.interceptor.authorize(method, _Context(token))


@pytest.fixture
def kit() -> Kit:
    monotonic, wall, timer, auth = Monotonic(), WallClock(), Timer(), Auth()
    revoked = RevocationSet(max_staleness=1.0, retention=990.0, clock=monotonic)
    verifier = TokenVerifier(_jwks, issuer="vaultpay-auth", audience="vaultpay", service="wallet")
    introspector = FeedIntrospector(verifier, revoked, fallback=auth)
    interceptor = AuthInterceptor(
        RULES, verifier, introspector, revocations=revoked, clock=wall, sleep=timer.sleep
    )
    return Kit(interceptor, revoked, monotonic, wall, timer, auth)


async def _until(condition: Any, what: str) -> None:
    """Lets the loop run until `condition()` holds, with a deadline."""
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0)


# ----- unary calls -----------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["TOKEN_REVOKED", "ACCOUNT_DISABLED"])
async def test_a_revoked_session_is_refused_on_a_non_strict_rpc_with_its_reason(
    kit: Kit, reason: str
) -> None:
    token = _token("s1")
    kit.fresh()
    assert await kit.call(READ, token) is not None
    kit.revoked.record([Revocation("s1", reason)])
    with pytest.raises(UnauthenticatedError) as refused:
        await kit.call(READ, token)
    assert refused.value.reason == reason
    assert kit.auth.calls == 0  # from memory


async def test_a_demoted_staff_members_token_is_refused_on_a_non_strict_staff_read(
    kit: Kit,
) -> None:
    token = _token("s-admin", role="admin")
    kit.fresh()
    assert await kit.call(STAFF_READ, token) is not None
    kit.revoked.record([Revocation("s-admin")])  # a role change ends the target's sessions
    with pytest.raises(UnauthenticatedError, match="no longer valid"):
        await kit.call(STAFF_READ, token)


async def test_a_live_session_on_a_fresh_feed_passes_without_a_round_trip(kit: Kit) -> None:
    kit.fresh()
    kit.revoked.record([Revocation("someone-else")])
    for method in (READ, STRICT):
        principal = await kit.call(method, _token("s1"))
        assert principal is not None
        assert principal.session_id == "s1"
    assert kit.auth.calls == 0


async def test_a_stale_feed_leaves_a_non_strict_call_to_the_token_alone(kit: Kit) -> None:
    """auth being down must not take every read down: no introspection, no refusal."""
    kit.stale()
    kit.auth.answer = Introspection(active=False, reason="TOKEN_REVOKED")  # never asked
    principal = await kit.call(READ, _token("s1"))
    assert principal is not None
    assert principal.role is Role.USER
    assert kit.auth.calls == 0


async def test_before_the_first_complete_poll_every_call_asks_auth(kit: Kit) -> None:
    """A process that just started may not know revocations made before it: a non-strict
    call is refused by auth's answer (and fails closed while auth cannot answer)."""
    kit.auth.answer = Introspection(active=False, reason="TOKEN_REVOKED")
    with pytest.raises(UnauthenticatedError) as refused:
        await kit.call(READ, _token("s1"))
    assert refused.value.reason == "TOKEN_REVOKED"
    assert kit.auth.calls == 1
    kit.fresh()
    kit.stale()  # established once: a stale feed now leaves non-strict calls to the token
    assert await kit.call(READ, _token("s1")) is not None
    assert kit.auth.calls == 1


async def test_a_stale_feed_still_refuses_a_revocation_it_already_holds(kit: Kit) -> None:
    kit.revoked.record([Revocation("s1", "ACCOUNT_DISABLED")])
    kit.stale()
    with pytest.raises(UnauthenticatedError) as refused:
        await kit.call(READ, _token("s1"))
    assert refused.value.reason == "ACCOUNT_DISABLED"
    assert kit.auth.calls == 0


async def test_a_stale_feed_sends_a_strict_call_to_introspection(kit: Kit) -> None:
    kit.stale()
    assert await kit.call(STRICT, _token("s1")) is not None
    assert kit.auth.calls == 1
    kit.auth.answer = Introspection(active=False, reason="TOKEN_REVOKED")
    with pytest.raises(UnauthenticatedError) as refused:
        await kit.call(STRICT, _token("s1"))
    assert refused.value.reason == "TOKEN_REVOKED"
    assert kit.auth.calls == 2


async def test_service_tokens_are_not_looked_up(kit: Kit) -> None:
    kit.revoked.record([Revocation("")])
    principal = await kit.call(INTERNAL, _token("", typ="service"))
    assert principal is not None
    assert principal.service == "wallet"


@pytest.mark.parametrize("service", ["kyc", "transfer", "auth", ""])
async def test_an_internal_rpc_refuses_a_service_its_rule_does_not_name(
    kit: Kit, service: str
) -> None:
    with pytest.raises(InsufficientPermissionsError, match=f"service {service} may not call"):
        await kit.call(INTERNAL, _token("", typ="service", service=service))


async def test_an_internal_rpc_refuses_a_user_token_before_looking_at_callers(kit: Kit) -> None:
    with pytest.raises(InsufficientPermissionsError, match="only services may call"):
        await kit.call(INTERNAL, _token("s1"))


def test_an_interceptor_that_is_not_always_strict_needs_the_revocations() -> None:
    verifier = TokenVerifier(_jwks, issuer="vaultpay-auth", audience="vaultpay", service="wallet")
    with pytest.raises(ValueError, match="revocations are required"):
        AuthInterceptor(RULES, verifier, Auth(), revocations=None)
    AuthInterceptor(RULES, verifier, Auth(), revocations=None, always_strict=True)


# ----- open streams ----------------------------------------------------------------------------


class Feed:
    """A stand-in for WatchNotifications: yields what the test puts, records when it closed."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.closed = False

    async def stream(self) -> AsyncIterator[str]:
        try:
            while True:
                yield await self.queue.get()
        finally:
            self.closed = True


async def _open(kit: Kit, token: str, feed: Feed) -> AsyncIterator[Any]:
    stream = kit.interceptor.around_stream(WATCH, _Context(token), feed.stream)
    feed.queue.put_nowait("first")
    async with asyncio.timeout(PATIENCE):
        assert await anext(stream) == "first"
    return stream


async def _refusal(stream: AsyncIterator[Any]) -> UnauthenticatedError:
    with pytest.raises(UnauthenticatedError) as ended:
        async with asyncio.timeout(PATIENCE):
            await anext(stream)
    return ended.value


@pytest.mark.parametrize("reason", ["TOKEN_REVOKED", "ACCOUNT_DISABLED"])
async def test_an_idle_stream_ends_when_its_session_is_revoked(kit: Kit, reason: str) -> None:
    kit.fresh()
    feed = Feed()
    stream = await _open(kit, _token("s1"), feed)
    waiting = asyncio.ensure_future(_refusal(stream))  # the stream idles: nothing to send
    await _until(lambda: kit.timer.asked, "the expiry timer")
    kit.revoked.record([Revocation("s2"), Revocation("s1", reason)])
    refused = await waiting
    assert refused.reason == reason
    assert feed.closed  # the handler's generator was closed (its subscription released)
    assert kit.revoked.watching() == 0


async def test_a_message_ready_as_the_session_is_revoked_is_not_sent(kit: Kit) -> None:
    feed = Feed()
    stream = await _open(kit, _token("s1"), feed)
    feed.queue.put_nowait("after the logout")
    kit.revoked.record([Revocation("s1")])
    refused = await _refusal(stream)
    assert refused.reason == "TOKEN_REVOKED"
    assert feed.closed


async def test_a_stream_ends_when_its_token_expires_plus_the_leeway(kit: Kit) -> None:
    kit.fresh()  # established: the expiry timer is the only one
    token = _token("s1", lifetime=60)
    feed = Feed()
    stream = await _open(kit, token, feed)
    waiting = asyncio.ensure_future(_refusal(stream))
    await _until(lambda: kit.timer.asked, "the expiry timer")
    end = _expiry(token) + LEEWAY
    assert kit.timer.asked == [pytest.approx(end - kit.wall.now)]
    kit.wall.now = end - 1  # woken early (a clock step): it sleeps again for the rest
    kit.timer.fire()
    await _until(lambda: len(kit.timer.asked) == 2, "the second timer")
    assert kit.timer.asked[1] == pytest.approx(1)
    assert not waiting.done()
    kit.wall.now = end
    kit.timer.fire()
    refused = await waiting
    assert isinstance(refused, TokenExpiredError)
    assert refused.reason == "TOKEN_EXPIRED"
    assert feed.closed
    assert kit.revoked.watching() == 0


async def test_a_message_after_the_token_expired_is_not_sent(kit: Kit) -> None:
    token = _token("s1", lifetime=60)
    feed = Feed()
    stream = await _open(kit, token, feed)
    kit.wall.now = _expiry(token) + LEEWAY  # the timer has not fired yet
    feed.queue.put_nowait("too late")
    refused = await _refusal(stream)
    assert isinstance(refused, TokenExpiredError)


async def test_a_stream_whose_client_goes_away_leaves_no_watch_behind(kit: Kit) -> None:
    feed = Feed()
    stream = await _open(kit, _token("s1"), feed)
    assert kit.revoked.watching() == 1
    await stream.aclose()  # type: ignore[attr-defined]
    assert feed.closed
    assert kit.revoked.watching() == 0


async def test_a_stream_opened_before_the_feed_is_established_asks_auth_until_it_is(
    kit: Kit,
) -> None:
    """The feed switched off (REVOCATION_FEED=false: every unary call asks auth) or not yet
    through its first poll: no revocation can reach the stream's watch, so auth is asked
    every few seconds (review of 2026-12-05: the stream outlived a logout until its token
    expired, while unary calls with the same token were refused)."""
    feed = Feed()
    stream = await _open(kit, _token("s1"), feed)
    waiting = asyncio.ensure_future(_refusal(stream))
    await _until(lambda: 5.0 in kit.timer.asked, "the recheck timer")
    calls = kit.auth.calls
    kit.timer.fire()  # still active: the stream stays
    await _until(lambda: kit.auth.calls == calls + 1, "a recheck")
    assert not waiting.done()
    kit.auth.answer = Introspection(active=False, reason="ACCOUNT_DISABLED")
    await _until(lambda: kit.timer.asked.count(5.0) == 2, "the next recheck timer")
    kit.timer.fire()
    refused = await waiting
    assert refused.reason == "ACCOUNT_DISABLED"
    assert feed.closed


async def test_a_stream_asks_auth_no_more_once_the_feed_is_established(kit: Kit) -> None:
    feed = Feed()
    stream = await _open(kit, _token("s1"), feed)
    await _until(lambda: 5.0 in kit.timer.asked, "the recheck timer")
    calls = kit.auth.calls
    kit.stale()  # established (if stale: a stale feed does not end streams)
    kit.timer.fire()
    feed.queue.put_nowait("second")
    async with asyncio.timeout(PATIENCE):
        assert await anext(stream) == "second"
    assert kit.auth.calls == calls
    await stream.aclose()  # type: ignore[attr-defined]


async def test_a_stale_feed_does_not_end_a_stream(kit: Kit) -> None:
    kit.stale()
    feed = Feed()
    stream = await _open(kit, _token("s1"), feed)
    feed.queue.put_nowait("second")
    async with asyncio.timeout(PATIENCE):
        assert await anext(stream) == "second"
    assert kit.auth.calls == 0
    await stream.aclose()  # type: ignore[attr-defined]


async def test_a_writing_stream_is_cancelled_and_refused_when_its_session_is_revoked(
    kit: Kit,
) -> None:
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def writes_forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    call = asyncio.ensure_future(
        kit.interceptor.around_writer(WATCH, _Context(_token("s1")), writes_forever)
    )
    async with asyncio.timeout(PATIENCE):
        await started.wait()
    kit.revoked.record([Revocation("s1", "ACCOUNT_DISABLED")])
    with pytest.raises(UnauthenticatedError) as refused:
        async with asyncio.timeout(PATIENCE):
            await call
    assert refused.value.reason == "ACCOUNT_DISABLED"
    assert cancelled.is_set()
    assert kit.revoked.watching() == 0
