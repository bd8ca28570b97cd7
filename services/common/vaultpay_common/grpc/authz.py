"""Auth interceptor: enforces the access rule the contract declares for each RPC.

Every user call: local signature and claims check with auth's public keys (verified tokens are
cached until they expire), then the token's session is looked up in the revoked sessions this
process holds in memory (`revocations`, auth's revocation feed: vaultpay_common.grpc.revocations).
A revoked session is refused on every RPC, strict or not, with the reason auth gave
(TOKEN_REVOKED, ACCOUNT_DISABLED): logout, deactivation and a role change end the session, so
a logged-out, deactivated or demoted user's token stops working everywhere within the feed's
freshness bound (1 s), not when it expires. The lookup is a dictionary read, no round trip.

Strict rules (`strict: true`) also ask a TokenIntrospector whether the token is still live; the
user's *current* role is then what the role check uses. In services other than auth that
introspector answers from the same feed while it is fresh and asks auth (IntrospectToken)
while it is stale, failing closed (UNAVAILABLE) when auth cannot answer. That is the one
difference left between strict and non-strict RPCs: while the feed is stale (auth unreachable,
the feed broken), a non-strict call is decided from the token and the revocations already known,
so auth being down does not take every read down with it. Before the feed's first complete
poll nothing is known, and every call is strict. In auth the introspector is one local
query and every user call takes the strict path (`always_strict`).

An open server stream is held to the same rule for as long as it stays open: it ends with
UNAUTHENTICATED once its token's session is recorded as revoked (woken by the revocation set,
no polling), its signing key is withdrawn (woken by the verifier) or the token expires (plus
the verifier's leeway; a timer at that moment), and each message is checked before it is
sent. While the revoked sessions are not established (the feed switched off, or before its
first complete poll) a stream asks auth about its token every `stream_recheck_seconds` (5).
Deny by default: a method with no rule is refused before its handler runs, and an internal
method admits only the services its rule names (`callers`); any other service is refused with
INSUFFICIENT_PERMISSIONS.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Final

from vaultpay_common.context import PRINCIPAL, Principal
from vaultpay_common.errors import (
    InsufficientPermissionsError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from vaultpay_common.grpc.request_context import metadata_value
from vaultpay_common.grpc.revocations import SessionRevocations
from vaultpay_common.grpc.rules import AccessRule
from vaultpay_common.grpc.tokens import (
    ACCESS_TOKEN_TYPE,
    SERVICE_TOKEN_TYPE,
    TokenClaims,
    TokenExpiredError,
    TokenIntrospector,
    TokenInvalidError,
    TokenVerifier,
)
from vaultpay_common.grpc.wrapping import CallInterceptor, OpenStream, UnaryCall

__all__ = ["AccessRuleMissingError", "AuthInterceptor", "InsufficientPermissionsError"]

log = logging.getLogger(__name__)

_BEARER = "bearer "
_END: Final = object()  # what a stream's step answers once the stream is exhausted

WallClock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]


class AccessRuleMissingError(PermissionDeniedError):
    reason = "ACCESS_RULE_MISSING"
    default_message = "this method declares no access rule and is denied"


def _no_longer_valid(reason: str) -> UnauthenticatedError:
    return UnauthenticatedError("the token is no longer valid", reason=reason)


class AuthInterceptor(CallInterceptor):
    """`revocations` is required unless `always_strict`: a service that does not ask auth on
    every call must hold the revoked sessions, or its non-strict RPCs would honour a revoked
    token until it expires. `clock` (wall time, what `exp` is measured in) and `sleep` time an
    open stream's end at its token's expiry; tests pass their own."""

    def __init__(
        self,
        rules: dict[str, AccessRule],
        verifier: TokenVerifier,
        introspector: TokenIntrospector,
        *,
        revocations: SessionRevocations | None,
        always_strict: bool = False,
        clock: WallClock = time.time,
        sleep: Sleep = asyncio.sleep,
        stream_recheck_seconds: float = 5.0,
    ) -> None:
        if revocations is None and not always_strict:
            raise ValueError(
                "revocations are required unless every call is strict: without them a revoked"
                " token keeps working on non-strict RPCs until it expires"
            )
        self._rules = rules
        self._verifier = verifier
        self._introspector = introspector
        self._revocations = revocations
        # A service whose introspection is a local query (auth) can afford the strict path
        # on every user call, so revocation and role changes apply at once everywhere.
        self._always_strict = always_strict
        self._clock = clock
        self._sleep = sleep
        self._stream_recheck_seconds = stream_recheck_seconds

    async def authorize(self, method: str, context: Any) -> Principal | None:
        principal, _ = await self._authorize(method, context)
        return principal

    async def _authorize(
        self, method: str, context: Any
    ) -> tuple[Principal | None, TokenClaims | None]:
        """The caller, and the claims its token was accepted with (None on a public method)."""
        rule = self._rules.get(method)
        if rule is None:
            raise AccessRuleMissingError()
        if rule.public:
            return None, None
        header = metadata_value(context, "authorization")
        if not header.lower().startswith(_BEARER):
            raise TokenInvalidError("send `authorization: Bearer <access token>`")
        token = header[len(_BEARER) :].strip()
        claims = await self._verifier.verify(token)
        if rule.internal:
            if claims.token_type != SERVICE_TOKEN_TYPE:
                raise InsufficientPermissionsError("only services may call this method")
            service = claims.subject.removeprefix("service:")
            if service not in rule.callers:  # deny by default: only the named services
                raise InsufficientPermissionsError(f"service {service} may not call this method")
            principal = Principal(subject=claims.subject, role=None, token=token, service=service)
            return principal, claims
        if claims.token_type != ACCESS_TOKEN_TYPE or claims.role is None:
            raise InsufficientPermissionsError("a user access token is required")
        # Every user call, strict or not, fresh feed or stale: a known revocation is final.
        self._refuse_if_revoked(claims)
        role = claims.role
        if rule.strict or self._always_strict or not self._revocations_established():
            answer = await self._introspector.introspect(token)
            if not answer.active:
                raise _no_longer_valid(answer.reason or "TOKEN_REVOKED")
            role = answer.role or role
        if rule.min_role is None or role < rule.min_role:
            raise InsufficientPermissionsError(
                f"requires role {rule.min_role.name if rule.min_role else '?'} or higher"
            )
        principal = Principal(
            subject=claims.subject, role=role, session_id=claims.session_id, token=token
        )
        return principal, claims

    def _revocations_established(self) -> bool:
        """False until the feed's first complete poll: the set may then lack revocations made
        before this process started, so every call asks, as a strict one does."""
        return self._revocations is None or self._revocations.is_established()

    def _refuse_if_revoked(self, claims: TokenClaims) -> None:
        """One dictionary lookup: the revoked sessions this process holds."""
        if self._revocations is not None and claims.session_id:
            reason = self._revocations.refusal(claims.session_id)
            if reason is not None:
                raise _no_longer_valid(reason)

    def _check_still_honoured(self, claims: TokenClaims) -> None:
        """What each message of an open stream is checked against before it is sent."""
        self._refuse_if_revoked(claims)
        self._verifier.check_key(claims.key_id)
        if self._clock() >= claims.expires_at + self._verifier.leeway_seconds:
            raise TokenExpiredError()

    async def around_unary(self, method: str, context: Any, call: UnaryCall) -> Any:
        PRINCIPAL.set(await self.authorize(method, context))
        return await call()

    async def around_stream(
        self, method: str, context: Any, stream: OpenStream
    ) -> AsyncIterator[Any]:
        principal, claims = await self._authorize(method, context)
        PRINCIPAL.set(principal)
        if claims is None:
            async for item in stream():
                yield item
            return
        # Closed explicitly: a client that goes away must release the handler's resources (a
        # notification subscription) now, not when the garbage collector finalizes it.
        token = principal.token if principal is not None else ""
        async with contextlib.aclosing(self._guarded(claims, token, stream())) as guarded:
            async for item in guarded:
                yield item

    async def around_writer(self, method: str, context: Any, call: UnaryCall) -> Any:
        """A streaming behaviour that writes with `context.write`: cancelled, and the call
        refused, when its token stops being honoured before it returns."""
        principal, claims = await self._authorize(method, context)
        PRINCIPAL.set(principal)
        if claims is None:
            return await call()
        token = principal.token if principal is not None else ""
        guard = asyncio.ensure_future(self._end_of(claims, token))
        task: asyncio.Future[Any] = asyncio.ensure_future(call())
        try:
            await asyncio.wait((task, guard), return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            raise guard.result()
        finally:
            await _settle(guard, task)

    async def _guarded(
        self, claims: TokenClaims, token: str, items: AsyncIterator[Any]
    ) -> AsyncGenerator[Any, None]:
        """`items`, ended by UNAUTHENTICATED once `claims` stop being honoured.

        Each step of the stream runs as a task of its own so that waiting for the next message
        can be raced against the guard (an idle stream must still end); the steps share one
        context, so context variables flow through the stream as they did in one task.
        """
        guard = asyncio.ensure_future(self._end_of(claims, token))
        context = contextvars.copy_context()
        step: asyncio.Task[Any] | None = None
        try:
            while True:
                step = asyncio.create_task(_next(items), context=context)
                await asyncio.wait((step, guard), return_when=asyncio.FIRST_COMPLETED)
                if guard.done():
                    raise guard.result()
                item = step.result()
                step = None
                if item is _END:
                    return
                self._check_still_honoured(claims)
                yield item
        finally:
            await _settle(guard, step)
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _end_of(self, claims: TokenClaims, token: str) -> UnauthenticatedError:
        """Waits until `claims` stop being honoured, and answers the refusal to end with:
        their session recorded as revoked (woken by the revocation set), their signing key
        withdrawn (woken by the verifier) or the token expired (a timer at `exp` plus the
        verifier's leeway). Nothing polls, but while the revoked sessions are not established
        (the feed switched off, or not yet through its first poll), when auth is asked again
        every `stream_recheck_seconds` (review of 2026-12-05: such a stream outlived its
        session's logout, deactivation or demotion until its token expired)."""
        loop = asyncio.get_running_loop()
        revoked: asyncio.Future[str] = loop.create_future()
        withdrawn: asyncio.Future[None] = loop.create_future()

        def on_revoked(reason: str) -> None:
            if not revoked.done():
                revoked.set_result(reason)

        def on_withdrawn() -> None:
            if not withdrawn.done():
                withdrawn.set_result(None)

        unwatch: Callable[[], None] = _nothing
        unwatch_key = self._verifier.watch_key(claims.key_id, on_withdrawn)
        try:
            self._verifier.check_key(claims.key_id)  # withdrawn since the call was authorized
        except UnauthenticatedError as refusal:
            unwatch_key()
            return refusal
        except Exception:
            unwatch_key()
            raise
        if self._revocations is not None and claims.session_id:
            unwatch = self._revocations.watch(claims.session_id, on_revoked)
            known = self._revocations.refusal(claims.session_id)
            if known is not None:  # recorded since the call was authorized
                unwatch()
                unwatch_key()
                return _no_longer_valid(known)
        expired = asyncio.ensure_future(self._until_expired(claims))
        asked = asyncio.ensure_future(self._until_auth_says_inactive(token))
        try:
            await asyncio.wait(
                (revoked, withdrawn, expired, asked), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            unwatch()
            unwatch_key()
            await _settle(expired, asked)
        if revoked.done():
            return _no_longer_valid(revoked.result())
        if asked.done() and not asked.cancelled() and asked.exception() is None:
            return _no_longer_valid(asked.result())
        if withdrawn.done():
            return TokenInvalidError("the token was signed with a withdrawn key")
        return TokenExpiredError()

    async def _until_auth_says_inactive(self, token: str) -> str:
        """While the revoked sessions are not established, asks auth about `token` every
        `stream_recheck_seconds`; returns the reason once it is no longer active. Once they
        are, waits for good: the revocation set's watch tells. An unanswered question keeps
        the stream (the next one is asked on time), as a stale feed does."""
        while not self._revocations_established():
            await self._sleep(self._stream_recheck_seconds)
            if self._revocations_established():
                break
            try:
                answer = await self._introspector.introspect(token)
            except Exception:
                log.warning("could not ask auth about an open stream's token", exc_info=True)
                continue
            if not answer.active:
                return answer.reason or "TOKEN_REVOKED"
        await asyncio.get_running_loop().create_future()  # never set: cancelled at the end
        raise AssertionError("unreachable")

    async def _until_expired(self, claims: TokenClaims) -> None:
        end = claims.expires_at + self._verifier.leeway_seconds
        while (left := end - self._clock()) > 0:
            await self._sleep(left)


def _nothing() -> None:
    pass


async def _next(items: AsyncIterator[Any]) -> Any:
    try:
        return await anext(items)
    except StopAsyncIteration:
        return _END


async def _settle(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancels the tasks still running and waits until they have stopped (a stream's step
    must have left the generator before the generator is closed); their outcome is read so
    none is reported as never retrieved."""
    running = [t for t in tasks if t is not None]
    for task in running:
        task.cancel()
    if running:
        await asyncio.wait(running)
    for task in running:
        if not task.cancelled():
            with contextlib.suppress(BaseException):
                task.exception()
