"""The strict path, answered by auth itself: is this access token honoured right now?"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from vaultpay_auth.service_layer.ports import AccessTokenIssuer, AuthUnitOfWork
from vaultpay_common.errors import DomainError, UnauthenticatedError, ValidationError
from vaultpay_common.grpc.tokens import (
    ACCESS_TOKEN_TYPE,
    MESH_SERVICES,
    Introspection,
    TokenClaims,
    TokenVerifier,
)
from vaultpay_common.ids import parse_uuid

__all__ = ["InvalidClientError", "LocalIntrospector", "ServiceIdentityService"]

log = logging.getLogger(__name__)


class LocalIntrospector:
    """Implements TokenIntrospector against auth's own database."""

    def __init__(self, uow: Callable[[], AuthUnitOfWork], verifier: TokenVerifier) -> None:
        self._uow = uow
        self._verifier = verifier

    async def introspect(self, token: str) -> Introspection:
        try:
            claims = await self._verifier.verify(token)
        except DomainError as exc:
            return Introspection(active=False, reason=exc.reason)
        if claims.token_type != ACCESS_TOKEN_TYPE:
            return Introspection(active=False, reason="TOKEN_INVALID")
        return await self.check_session(claims)

    async def check_session(self, claims: TokenClaims) -> Introspection:
        """One query: the session named by `sid`, joined to its user."""
        try:
            session_id = parse_uuid(claims.session_id, "sid")
        except ValidationError:
            return Introspection(active=False, reason="TOKEN_INVALID")
        async with self._uow() as uow:
            holder = await uow.sessions.get_with_holder(session_id)
        if holder is None or holder.session.user_id != claims.subject:
            return Introspection(active=False, reason="TOKEN_REVOKED")
        if not holder.user_active:
            return Introspection(active=False, reason="ACCOUNT_DISABLED")
        if not holder.session.is_live(datetime.now(UTC)):
            return Introspection(active=False, reason="TOKEN_REVOKED")
        return Introspection(
            active=True,
            role=holder.user_role,
            user_id=claims.subject,
            session_id=session_id,
        )


class InvalidClientError(UnauthenticatedError):
    reason = "INVALID_CLIENT"
    default_message = "unknown service client or wrong secret"


class ServiceIdentityService:
    """Client-credentials for the mesh's own services."""

    def __init__(self, clients: dict[str, str], issuer: AccessTokenIssuer) -> None:
        self._clients = clients
        self._issuer = issuer

    def issue(self, client_id: str, client_secret: str, peer: str = "") -> tuple[str, datetime]:
        """A token for `client_id` to present to `peer` alone (one of MESH_SERVICES); `peer`
        empty: an unscoped token, as a caller of a build before scoped tokens asks for (the
        services accept it only while `accept_unscoped_service_tokens` is set)."""
        if peer and peer not in MESH_SERVICES:
            raise ValidationError.single(
                "audience", f"must be one of {', '.join(MESH_SERVICES)} (the service called)"
            )
        expected = self._clients.get(client_id, "")
        # Compare even for unknown clients so timing does not reveal which ids exist.
        matches = hmac.compare_digest(expected.encode(), client_secret.encode())
        if not expected or not matches:
            # What a leaked or guessed service secret looks like from here: alert on a run
            # of these (the client id as sent, cut short; never the secret).
            log.warning(
                "a service token was refused: unknown client or wrong secret",
                extra={"client_id": client_id[:64], "known_client": bool(expected)},
            )
            raise InvalidClientError()
        token, expires_at = self._issuer.issue_service_token(client_id, peer)
        if peer:
            log.info("a service token was issued", extra={"client_id": client_id, "peer": peer})
        else:
            log.warning(
                "an unscoped service token was issued (a caller of an older build)",
                extra={"client_id": client_id},
            )
        return token, expires_at
