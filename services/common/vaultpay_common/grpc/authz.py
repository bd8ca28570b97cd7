"""Auth interceptor: enforces the access rule the contract declares for each RPC.

Fast path: local signature and claims check with auth's public keys (verified tokens are
cached until they expire). Strict path (rules with `strict: true`): also ask a
TokenIntrospector whether the token is still live; the user's *current* role is then what
the role check uses. In services other than auth that introspector answers from auth's
revocation feed kept in memory, and asks auth only while the feed is stale
(vaultpay_common.grpc.revocations); in auth it is one local query. Deny by default: a method
with no rule is refused before its handler runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from vaultpay_common.context import PRINCIPAL, Principal
from vaultpay_common.errors import (
    InsufficientPermissionsError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from vaultpay_common.grpc.request_context import metadata_value
from vaultpay_common.grpc.rules import AccessRule
from vaultpay_common.grpc.tokens import (
    ACCESS_TOKEN_TYPE,
    SERVICE_TOKEN_TYPE,
    TokenIntrospector,
    TokenInvalidError,
    TokenVerifier,
)
from vaultpay_common.grpc.wrapping import CallInterceptor, OpenStream, UnaryCall

__all__ = ["AccessRuleMissingError", "AuthInterceptor", "InsufficientPermissionsError"]

_BEARER = "bearer "


class AccessRuleMissingError(PermissionDeniedError):
    reason = "ACCESS_RULE_MISSING"
    default_message = "this method declares no access rule and is denied"


class AuthInterceptor(CallInterceptor):
    def __init__(
        self,
        rules: dict[str, AccessRule],
        verifier: TokenVerifier,
        introspector: TokenIntrospector,
        *,
        always_strict: bool = False,
    ) -> None:
        self._rules = rules
        self._verifier = verifier
        self._introspector = introspector
        # A service whose introspection is a local query (auth) can afford the strict path
        # on every user call, so revocation and role changes apply at once everywhere.
        self._always_strict = always_strict

    async def authorize(self, method: str, context: Any) -> Principal | None:
        rule = self._rules.get(method)
        if rule is None:
            raise AccessRuleMissingError()
        if rule.public:
            return None
        header = metadata_value(context, "authorization")
        if not header.lower().startswith(_BEARER):
            raise TokenInvalidError("send `authorization: Bearer <access token>`")
        token = header[len(_BEARER) :].strip()
        claims = await self._verifier.verify(token)
        if rule.internal:
            if claims.token_type != SERVICE_TOKEN_TYPE:
                raise InsufficientPermissionsError("only services may call this method")
            service = claims.subject.removeprefix("service:")
            return Principal(subject=claims.subject, role=None, token=token, service=service)
        if claims.token_type != ACCESS_TOKEN_TYPE or claims.role is None:
            raise InsufficientPermissionsError("a user access token is required")
        role = claims.role
        if rule.strict or self._always_strict:
            answer = await self._introspector.introspect(token)
            if not answer.active:
                raise UnauthenticatedError(
                    "the token is no longer valid", reason=answer.reason or "TOKEN_REVOKED"
                )
            role = answer.role or role
        if rule.min_role is None or role < rule.min_role:
            raise InsufficientPermissionsError(
                f"requires role {rule.min_role.name if rule.min_role else '?'} or higher"
            )
        return Principal(
            subject=claims.subject, role=role, session_id=claims.session_id, token=token
        )

    async def around_unary(self, method: str, context: Any, call: UnaryCall) -> Any:
        PRINCIPAL.set(await self.authorize(method, context))
        return await call()

    async def around_stream(
        self, method: str, context: Any, stream: OpenStream
    ) -> AsyncIterator[Any]:
        PRINCIPAL.set(await self.authorize(method, context))
        async for item in stream():
            yield item
