"""The client side of auth for every other service: JWKS, service identity, the strict path.

The strict path answers from auth's revocation feed, kept in memory (`revocations.py`), and
asks auth (IntrospectToken) only while that copy is stale. Peer errors are translated here, at
the boundary: auth being unreachable becomes `AuthUnavailableError` (UNAVAILABLE, reason
AUTH_UNAVAILABLE), so strict calls fail closed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import grpc
import jwt
from google.protobuf.json_format import MessageToDict
from grpc.aio import ClientCallDetails

from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay_common.context import REQUEST_ID, Role
from vaultpay_common.grpc.revocations import (
    FeedCursorRejectedError,
    FeedIntrospector,
    Revocation,
    RevocationFeed,
    RevocationPage,
    RevocationSet,
)
from vaultpay_common.grpc.tokens import (
    DEFAULT_MAX_TOKEN_LIFETIME,
    MESH_SERVICES,
    AuthUnavailableError,
    Introspection,
    TokenVerifier,
    service_audience,
)

__all__ = [
    "AuthUnavailableError",
    "GrpcJwksFetcher",
    "GrpcRevocationSource",
    "GrpcTokenIntrospector",
    "PeerAuth",
    "RenewRejectedIdentity",
    "ServiceTokenProvider",
    "outgoing_metadata",
]

log = logging.getLogger(__name__)

_CALL_TIMEOUT = 3.0
# How long a revoked session is remembered after it was received: the longest access token,
# the verifier's leeway, and a minute for the clocks of auth and this host to disagree.
_REVOCATION_RETENTION = DEFAULT_MAX_TOKEN_LIFETIME + 30 + 60
_REASONS = {
    auth_pb2.INACTIVE_REASON_TOKEN_INVALID: "TOKEN_INVALID",
    auth_pb2.INACTIVE_REASON_TOKEN_EXPIRED: "TOKEN_EXPIRED",
    auth_pb2.INACTIVE_REASON_TOKEN_REVOKED: "TOKEN_REVOKED",
    auth_pb2.INACTIVE_REASON_ACCOUNT_DISABLED: "ACCOUNT_DISABLED",
    auth_pb2.INACTIVE_REASON_USER_NOT_FOUND: "TOKEN_REVOKED",
}


def outgoing_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Metadata for a call to a peer: our identity and the current request id."""
    return (("authorization", f"Bearer {token}"), ("x-request-id", REQUEST_ID.get()))


# After a failed renewal, callers are answered without asking auth again for this long: from
# the token still held, or AUTH_UNAVAILABLE at once (each caller queued on the lock waited out
# a whole call's timeout in turn, three seconds each, the revocation feed among them).
_RENEWAL_RETRY_PAUSE = 2.0
# A held token is still handed out after a failed renewal while it has this long left.
_EXPIRY_MARGIN = 15.0


@dataclass(slots=True)
class _Held:
    token: str = ""
    renew_at: float = 0.0
    expires_at: float = 0.0
    retry_at: float = 0.0  # no renewal before this, after one failed

    def usable(self, now: float, *, renewing: bool = False) -> str | None:
        """The token to use now without asking auth, or None to ask (or refuse). Past its
        renewal time it still serves, while valid, when the last renewal failed a moment ago
        or one is under way (`renewing`): nobody waits on a renewal a valid token covers."""
        if not self.token:
            return None
        if now < self.renew_at:
            return self.token
        if (renewing or now < self.retry_at) and now < self.expires_at - _EXPIRY_MARGIN:
            return self.token
        return None


class ServiceTokenProvider:
    """Holds this service's own tokens (client-credentials), one per peer it calls (each
    addressed to that peer alone: `tokens.service_audience`), renewed before they expire.

        token = await identity.token("wallet")      # for a call to wallet
        wallet_token = identity.for_peer("wallet")  # the same, as a callable for an adapter

    `scoped` False (a rolling update from a build before scoped tokens, whose services would
    refuse one): one unscoped token, addressed to the whole mesh, for every peer. `audience`
    (the mesh's) lets a scoped token auth answered unscoped be said (an auth older than
    scoped tokens, rolled back: every peer of this build refuses it).
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        client_id: str,
        client_secret: str,
        *,
        scoped: bool = True,
        audience: str = "",
    ) -> None:
        self._stub = auth_pb2_grpc.AuthInternalServiceStub(channel)
        self._client_id = client_id
        self._client_secret = client_secret
        self._scoped = scoped
        self._audience = audience
        self._held: dict[str, _Held] = {}
        # One renewal at a time per token (per peer): a renewal of auth's token (the
        # revocation feed's) never holds up a call to wallet.
        self._locks: dict[str, asyncio.Lock] = {}

    def for_peer(self, peer: str) -> Callable[[], Awaitable[str]]:
        """`token(peer)` as a callable, for an adapter that calls only `peer`."""
        if peer not in MESH_SERVICES:
            raise ValueError(f"not a service of the mesh: {peer!r}")
        return functools.partial(self.token, peer)

    async def token(self, peer: str) -> str:
        """The token for a call to `peer`. Renewed at 80 % of its life; while auth cannot
        renew it, the one held is used until shortly before it expires (review of
        2026-12-05: a renewal two minutes early that failed refused every call meanwhile,
        though the token held was good), and auth is asked again at most every 2 s."""
        asked = peer if self._scoped else ""
        lock = self._locks.setdefault(asked, asyncio.Lock())
        held = self._held.get(asked)
        usable = None if held is None else held.usable(time.time(), renewing=lock.locked())
        if usable is not None:
            return usable
        async with lock:
            held = self._held.setdefault(asked, _Held())
            now = time.time()
            if (usable := held.usable(now)) is not None:
                return usable
            if now < held.retry_at:  # failed a moment ago, and nothing usable is held
                raise AuthUnavailableError()
            try:
                reply = await self._stub.IssueServiceToken(
                    auth_pb2.IssueServiceTokenRequest(
                        client_id=self._client_id,
                        client_secret=self._client_secret,
                        audience=asked,
                    ),
                    timeout=_CALL_TIMEOUT,
                )
            except grpc.aio.AioRpcError as exc:
                held.retry_at = time.time() + _RENEWAL_RETRY_PAUSE
                if (usable := held.usable(time.time())) is not None:
                    log.warning(
                        "could not renew a service token; the one held is still valid",
                        extra={"peer": peer, "code": exc.code().name},
                    )
                    return usable
                raise AuthUnavailableError() from exc
            if asked and self._audience:
                self._check_scoped(reply.access_token, service_audience(self._audience, peer))
            now = time.time()
            lifetime = reply.expire_time.seconds - now
            held.token = reply.access_token
            held.renew_at = now + lifetime * 0.8
            held.expires_at = float(reply.expire_time.seconds)
            held.retry_at = 0.0
            return held.token

    @staticmethod
    def _check_scoped(token: str, expected: str) -> None:
        """Says (ERROR) a token auth issued for another audience than asked: an auth of a
        build before scoped tokens ignores the request's audience, and every peer of this
        build refuses what it issues (401 TOKEN_INVALID) unless told to accept it."""
        try:
            audience = jwt.decode(token, options={"verify_signature": False}).get("aud")
        except jwt.PyJWTError:
            audience = None
        if audience != expected:
            log.error(
                "auth issued a service token not addressed to the peer asked for: an auth"
                " older than scoped service tokens? Its peers refuse it unless"
                " ACCEPT_UNSCOPED_SERVICE_TOKENS is set on them",
                extra={"expected_audience": expected, "audience": str(audience)},
            )

    def forget(self, token: str) -> None:
        """A peer refused `token` (its signing key was withdrawn, say): the next call gets a
        new one instead of reusing it until it expires."""
        for held in self._held.values():
            if token and token == held.token:
                held.token, held.renew_at, held.expires_at, held.retry_at = "", 0.0, 0.0, 0.0


class RenewRejectedIdentity(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """On every peer channel: a call refused as UNAUTHENTICATED makes the service token it
    carried forgotten, so an emergency key withdrawal costs one failed call, not the rest of
    the token's lifetime. `provider` is set once the service's identity exists."""

    def __init__(self) -> None:
        self.provider: ServiceTokenProvider | None = None

    async def intercept_unary_unary(
        self,
        continuation: Callable[[ClientCallDetails, Any], Awaitable[grpc.aio.UnaryUnaryCall]],
        client_call_details: ClientCallDetails,
        request: Any,
    ) -> grpc.aio.UnaryUnaryCall:
        call = await continuation(client_call_details, request)
        if self.provider is not None and await call.code() == grpc.StatusCode.UNAUTHENTICATED:
            for key, value in client_call_details.metadata or ():
                if key == "authorization" and isinstance(value, str):
                    self.provider.forget(value.removeprefix("Bearer "))
        return call


class GrpcJwksFetcher:
    """Fetches auth's public keys through AuthService.GetJwks."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)

    async def __call__(self) -> list[dict[str, str]]:
        try:
            reply = await self._stub.GetJwks(auth_pb2.GetJwksRequest(), timeout=_CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise AuthUnavailableError() from exc
        return [
            {
                str(k): str(v)
                for k, v in MessageToDict(key, preserving_proto_field_name=True).items()
            }
            for key in reply.keys
        ]


class GrpcTokenIntrospector:
    """The strict path for services other than auth."""

    def __init__(self, channel: grpc.aio.Channel, identity: ServiceTokenProvider) -> None:
        self._stub = auth_pb2_grpc.AuthInternalServiceStub(channel)
        self._identity = identity

    async def introspect(self, token: str) -> Introspection:
        try:
            reply = await self._stub.IntrospectToken(
                auth_pb2.IntrospectTokenRequest(token=token),
                metadata=outgoing_metadata(await self._identity.token("auth")),
                timeout=_CALL_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            raise AuthUnavailableError() from exc
        if not reply.active:
            return Introspection(active=False, reason=_REASONS.get(reply.inactive_reason, ""))
        try:
            role = Role(reply.role)
        except ValueError:
            # ROLE_UNSPECIFIED or a role this build does not know (an auth of another version
            # mid-rollout): not a decision this service can act on. Fails closed as an auth
            # outage does (AUTH_UNAVAILABLE), not INTERNAL with a traceback.
            raise AuthUnavailableError(
                "auth answered an active token without a known role"
            ) from None
        return Introspection(active=True, role=role)


class GrpcRevocationSource:
    """Reads auth's revocation feed (AuthInternalService.PollSessionRevocations).

    `timeout` bounds each page beyond the time auth may hold it: an answer later than the
    freshness bound is stale on arrival.
    """

    def __init__(
        self, channel: grpc.aio.Channel, identity: ServiceTokenProvider, *, timeout: float
    ) -> None:
        self._stub = auth_pb2_grpc.AuthInternalServiceStub(channel)
        self._identity = identity
        self._timeout = timeout

    async def __call__(self, cursor: str, wait: float) -> RevocationPage:
        request = auth_pb2.PollSessionRevocationsRequest(cursor=cursor)
        if wait > 0:
            request.wait.FromTimedelta(timedelta(seconds=wait))
        try:
            reply = await self._stub.PollSessionRevocations(
                request,
                metadata=outgoing_metadata(await self._identity.token("auth")),
                timeout=wait + self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise FeedCursorRejectedError(exc.details()) from exc
            raise AuthUnavailableError() from exc
        return RevocationPage(
            revocations=[
                Revocation(r.session_id, _REASONS.get(r.reason, "TOKEN_REVOKED"))
                for r in reply.revocations
            ],
            next_cursor=reply.next_cursor,
            caught_up=reply.caught_up,
            waited=reply.waited.ToTimedelta().total_seconds(),
            withdrawn_keys=tuple(reply.withdrawn_key_ids),
        )


class PeerAuth:
    """Everything a service other than auth needs to authenticate its callers:

    auth = PeerAuth(channel, client_id="wallet", client_secret=..., issuer=..., audience=...,
                    service="wallet")   # the service whose callers it authenticates
    interceptors = standard_interceptors(
        "wallet", services, auth.verifier, auth.introspector, revocations=auth.revocations
    )
    runtime job: auth.feed.run()     # keeps auth.revocations fresh; every user call reads it
    await stub.SomeInternalRpc(
        request, metadata=outgoing_metadata(await auth.identity.token("transfer"))
    )

    Until `feed.run()` has completed a poll, every call asks auth (IntrospectToken): the set
    may lack revocations made before this process started. While the feed cannot poll, the
    strict path asks auth on every call; non-strict calls then refuse only the revocations
    already received.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        client_id: str,
        client_secret: str,
        issuer: str,
        audience: str,
        service: str,
        accept_unscoped_service_tokens: bool = False,
        request_scoped_service_tokens: bool = True,
        revocation_poll_seconds: float = 0.25,
        revocation_wait_seconds: float = 0.5,
        revocation_max_staleness_seconds: float = 1.0,
    ) -> None:
        self.identity = ServiceTokenProvider(
            channel,
            client_id,
            client_secret,
            scoped=request_scoped_service_tokens,
            audience=audience,
        )
        self.verifier = TokenVerifier(
            GrpcJwksFetcher(channel),
            issuer=issuer,
            audience=audience,
            service=service,
            accept_unscoped_service_tokens=accept_unscoped_service_tokens,
        )
        self.remote_introspector = GrpcTokenIntrospector(channel, self.identity)
        self.revocations = RevocationSet(
            max_staleness=revocation_max_staleness_seconds, retention=_REVOCATION_RETENTION
        )
        source = GrpcRevocationSource(
            channel, self.identity, timeout=revocation_max_staleness_seconds
        )
        self.feed = RevocationFeed(
            source,
            self.revocations,
            poll_interval=revocation_poll_seconds,
            wait=revocation_wait_seconds,
            on_keys_withdrawn=self.verifier.forget_keys,
        )
        self.introspector = FeedIntrospector(
            self.verifier, self.revocations, fallback=self.remote_introspector
        )
