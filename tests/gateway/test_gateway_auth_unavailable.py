"""A gateway without keys: auth unreachable (or publishing no usable key) since Envoy started.

jwt_authn then fetches the JWKS for each request and refuses it when the fetch fails, with
401 whatever the token. A good token must not read as a bad one (clients sign their user out
on TOKEN_INVALID): it is 503 UNAVAILABLE, reason AUTH_UNAVAILABLE, as the services answer when
they cannot check a token; and once keys arrive, a bad token is TOKEN_INVALID again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.gateway.auth_double import SigningKey
from tests.gateway.harness import (
    GatewayUnderTest,
    Reply,
    ThreadedAuthDouble,
    closed_port,
    loopback_settings,
    start_gateway,
)
from tests.gateway.test_gateway_json import JSON, assert_gateway_error, bearer
from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay_gateway import HostPort
from vaultpay_gateway.errors import AUTH_UNAVAILABLE_REASON, AUTH_UNAVAILABLE_TEXT

# What jwt_authn (Envoy 1.40) says when it has no keys and its own fetch failed.
FETCH_FAILED_DETAILS = "jwt_authn_access_denied{Jwks_remote_fetch_is_failed}"
# A protected JSON route, and the KYC file's JSON route, whose token the early jwt_authn checks.
PROTECTED_JSON_CALLS = [("GET", "/v1/auth/me", None), ("POST", "/v1/kyc/submissions", "{}")]


def _start(
    factory: pytest.TempPathFactory, name: str, descriptor_set: Path, auth: HostPort
) -> GatewayUnderTest:
    workdir = factory.mktemp(name)
    return start_gateway(workdir, loopback_settings(workdir, descriptor_set, {"auth": auth}))


@pytest.fixture(scope="module")
def keyless_gateway(
    tmp_path_factory: pytest.TempPathFactory, descriptor_set: Path
) -> Iterator[GatewayUnderTest]:
    """auth (the JWKS' upstream) points at a port that stays closed, from the start."""
    running = _start(
        tmp_path_factory,
        "gateway-keyless",
        descriptor_set,
        HostPort("127.0.0.1", closed_port()),
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def empty_auth() -> Iterator[ThreadedAuthDouble]:
    """An auth double that publishes no key until a test gives it one."""
    double = ThreadedAuthDouble([])
    try:
        yield double
    finally:
        double.stop()


def _assert_auth_unavailable(reply: Reply) -> None:
    status = assert_gateway_error(reply, 503, 14, AUTH_UNAVAILABLE_REASON)
    assert status["message"] == AUTH_UNAVAILABLE_TEXT
    # jwt_authn's challenge said error="invalid_token": not known here.
    assert "invalid_token" not in reply.headers.get("www-authenticate", "")


def _assert_grpc_error(error: grpc.aio.AioRpcError, code: grpc.StatusCode, reason: str) -> None:
    """`code`, and Status details (as grpcio reads them) naming the gateway's `reason`."""
    assert error.code() == code, error
    status = rpc_status.from_call(error)
    assert status is not None, f"no grpc-status-details-bin: {error!r}"
    assert status.code == code.value[0]
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info), status
    assert (info.reason, info.domain) == (reason, "vaultpay.gateway")


async def _get_me_error(gateway: GatewayUnderTest, token: str) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await auth_pb2_grpc.AuthServiceStub(channel).GetMe(
                auth_pb2.GetMeRequest(), metadata=[("authorization", f"Bearer {token}")]
            )
    return error.value


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED_JSON_CALLS)
def test_a_good_token_without_keys_is_auth_unavailable_for_json(
    keyless_gateway: GatewayUnderTest,
    signing_key: SigningKey,
    method: str,
    path: str,
    body: str | None,
) -> None:
    reply = keyless_gateway.call(method, path, body, {**JSON, **bearer(signing_key.token())})

    _assert_auth_unavailable(reply)
    logged = keyless_gateway.logged(reply.headers["x-request-id"])
    assert logged["details"] == FETCH_FAILED_DETAILS
    assert logged["grpc_status"] == 14


async def test_a_good_token_without_keys_is_auth_unavailable_for_grpc(
    keyless_gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    error = await _get_me_error(keyless_gateway, signing_key.token())

    _assert_grpc_error(error, grpc.StatusCode.UNAVAILABLE, AUTH_UNAVAILABLE_REASON)
    assert error.details() == AUTH_UNAVAILABLE_TEXT


async def test_a_key_set_without_keys_is_auth_unavailable_until_keys_arrive(
    tmp_path_factory: pytest.TempPathFactory,
    descriptor_set: Path,
    empty_auth: ThreadedAuthDouble,
    signing_key: SigningKey,
) -> None:
    gateway = _start(
        tmp_path_factory,
        "gateway-empty-jwks",
        descriptor_set,
        HostPort("127.0.0.1", empty_auth.port),
    )
    try:
        token = signing_key.token()
        _assert_auth_unavailable(gateway.call("GET", "/v1/auth/me", headers=bearer(token)))
        error = await _get_me_error(gateway, token)
        _assert_grpc_error(error, grpc.StatusCode.UNAVAILABLE, AUTH_UNAVAILABLE_REASON)

        empty_auth.servicer.keys = [signing_key]
        gateway.wait_until_token_accepted(token)

        # Keys at hand: a token they do not verify is a bad token again.
        forged = SigningKey(kid=signing_key.kid).token()
        reply = gateway.call("GET", "/v1/auth/me", headers=bearer(forged))
        assert_gateway_error(reply, 401, 16, "TOKEN_INVALID")
        error = await _get_me_error(gateway, forged)
        _assert_grpc_error(error, grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")
    finally:
        gateway.stop()
