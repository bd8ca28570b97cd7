"""A test double of the auth service for the gateway's config tests.

It speaks the real `vaultpay.auth.v1.AuthService` contract (plus gRPC health) with just
enough behaviour to observe what Envoy does:

- `GetJwks` serves the public half of the Ed25519 keys in `keys` (mutable: tests rotate), or
  fails with UNAVAILABLE while `jwks_down` is set.
- `Register` echoes the request, or fails with INVALID_ARGUMENT + `ErrorInfo` + `BadRequest`
  details when the email has no "@", so error-detail transcoding can be checked, or with
  RESOURCE_EXHAUSTED + `ErrorInfo` + `RetryInfo` (2.5 s) when the email starts with
  "throttled@", the way the services answer their own throttles, or with INVALID_ARGUMENT +
  a `BadRequest` in proto spelling (`PROTO_PATH_VIOLATIONS`) when it starts with "fields@".
- `GetMe` reports the request metadata it received (client address, request id, the
  gateway's identity header, whether a bearer token was forwarded) inside `user.full_name`
  as JSON.
- `Login` and the other RPCs fail with UNIMPLEMENTED and no details, like gRPC core's own
  errors (no `ErrorInfo`).
- `register_calls` counts the Register calls that arrived, so tests can tell that a request
  was stopped at the edge.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc

__all__ = ["AuthDouble", "SigningKey", "start_auth_double"]

ECHOED_METADATA = (
    "x-envoy-external-address",
    "x-request-id",
    "x-forwarded-for",
    "x-vaultpay-gateway-identity",
)
RETRY_DELAY = duration_pb2.Duration(seconds=2, nanos=500_000_000)


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 key pair with a `kid`, able to mint tokens the way auth does."""

    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    private: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    def jwk(self) -> auth_pb2.JsonWebKey:
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        return auth_pb2.JsonWebKey(
            kty="OKP", crv="Ed25519", x=x, kid=self.kid, alg="EdDSA", use="sig"
        )

    def token(self, *, lifetime: float = 900, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": "vaultpay-auth",
            "aud": "vaultpay",
            "sub": "user-1",
            "role": "ROLE_USER",
            "jti": uuid.uuid4().hex,
            "typ": "access",
            "iat": now,
            "exp": now + int(lifetime),
            **overrides,
        }
        return jwt.encode(claims, self.private, algorithm="EdDSA", headers={"kid": self.kid})


class AuthDouble(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, keys: list[SigningKey]) -> None:
        self.keys = keys
        self.jwks_calls = 0
        self.jwks_down = False
        self.register_calls = 0

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GetJwksResponse:
        self.jwks_calls += 1
        if self.jwks_down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "key store unavailable")
        return auth_pb2.GetJwksResponse(keys=[k.jwk() for k in self.keys])

    async def Register(
        self, request: auth_pb2.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RegisterResponse:
        self.register_calls += 1
        if request.email.startswith("slow@"):
            await asyncio.sleep(3)  # longer than the slow-gateway test's unary timeout
        if "@" not in request.email:
            await context.abort_with_status(rpc_status.to_status(_invalid_email(request.email)))
        if request.email.startswith("fields@"):
            await context.abort_with_status(rpc_status.to_status(_invalid_fields()))
        if request.email.startswith("throttled@"):
            await context.abort_with_status(rpc_status.to_status(_throttled()))
        user = auth_pb2.User(user_id="user-1", email=request.email, full_name=request.full_name)
        return auth_pb2.RegisterResponse(user=user)

    async def GetMe(
        self, request: auth_pb2.GetMeRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GetMeResponse:
        metadata: Mapping[str, str] = {k: v for k, v in context.invocation_metadata() or ()}
        seen = {name: metadata.get(name, "") for name in ECHOED_METADATA}
        seen["bearer"] = str(metadata.get("authorization", "").startswith("Bearer "))
        # `x-test-reply-padding: N` makes the reply N bytes larger (large-response tests).
        padding = "p" * int(metadata.get("x-test-reply-padding", "0") or 0)
        return auth_pb2.GetMeResponse(
            user=auth_pb2.User(
                user_id="user-1", full_name=json.dumps(seen), deactivation_reason=padding
            )
        )

    async def Login(
        self, request: auth_pb2.LoginRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.LoginResponse:
        await _unimplemented(context)

    async def RefreshToken(
        self, request: auth_pb2.RefreshTokenRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RefreshTokenResponse:
        await _unimplemented(context)

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.LogoutResponse:
        await _unimplemented(context)

    async def ChangePassword(
        self, request: auth_pb2.ChangePasswordRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ChangePasswordResponse:
        await _unimplemented(context)


async def _unimplemented(context: grpc.aio.ServicerContext) -> NoReturn:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the test double")
    raise AssertionError("abort returned")


def _status(code: int, message: str, *details: Any) -> status_pb2.Status:
    packed = []
    for detail in details:
        any_detail = any_pb2.Any()
        any_detail.Pack(detail)
        packed.append(any_detail)
    return status_pb2.Status(code=code, message=message, details=packed)


def _throttled() -> status_pb2.Status:
    return _status(
        code_pb2.RESOURCE_EXHAUSTED,
        "too many sign-ups from this address",
        error_details_pb2.ErrorInfo(reason="RATE_LIMITED", domain="vaultpay.auth"),
        error_details_pb2.RetryInfo(retry_delay=RETRY_DELAY),
    )


def _invalid_email(email: str) -> status_pb2.Status:
    return _status(
        code_pb2.INVALID_ARGUMENT,
        "invalid registration",
        error_details_pb2.ErrorInfo(reason="INVALID_EMAIL", domain="vaultpay.auth"),
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field="email", description=f"{email!r} is not an email address"
                )
            ]
        ),
    )


# Field paths as the services write them (proto names); `fields@…` registrations get them.
PROTO_PATH_VIOLATIONS = (
    "full_name",
    "limits[1].daily.amount_minor",
    "labels['some_key'].value_1",
    "request",
    # One path the tail of the next: the message's rename must not touch the longer one.
    "account_number",
    "bank_account.account_number",
)


def described(field: str) -> str:
    """What is wrong with `field`: the first has a quote and a backslash (JSON escapes them)."""
    return 'is "wrong" \\ here' if field == PROTO_PATH_VIOLATIONS[0] else "is wrong"


def _invalid_fields() -> status_pb2.Status:
    """A BadRequest in proto spelling, then an ErrorInfo whose metadata has a `field` key."""
    return _status(
        code_pb2.INVALID_ARGUMENT,
        # As a service's ValidationError words it: each field by its proto path.
        "invalid request: "
        + "; ".join(f"{field}: {described(field)}" for field in PROTO_PATH_VIOLATIONS),
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=field, description=described(field)
                )
                for field in PROTO_PATH_VIOLATIONS
            ]
        ),
        error_details_pb2.ErrorInfo(
            reason="INVALID_ARGUMENT", domain="vaultpay.auth", metadata={"field": "full_name"}
        ),
    )


async def start_auth_double(keys: list[SigningKey]) -> tuple[grpc.aio.Server, AuthDouble, int]:
    """Starts the double on 127.0.0.1 at a free port; returns the server, servicer and port."""
    server = grpc.aio.server()
    servicer = AuthDouble(keys)
    auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, servicer, port
