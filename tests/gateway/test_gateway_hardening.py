"""Findings of the security review, each proven through a real Envoy in front of the auth double.

Per-client rate limits (each test is its own client: the client socket is bound to its own
loopback address), request-line and header caps, generic messages for upstream errors without
an ErrorInfo, query strings and duplicate keys on JSON body routes, `Cache-Control: no-store`,
the gateway's identity towards the services, the bearer scheme and wrong audiences, the admin
interface on a private Unix socket, and `Retry-After`.
"""

from __future__ import annotations

import json
import math
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.gateway.auth_double import RETRY_DELAY, SigningKey
from tests.gateway.conftest import ALLOWED_ORIGIN, MAX_REQUEST_BYTES
from tests.gateway.harness import (
    GatewayUnderTest,
    Reply,
    ThreadedAuthDouble,
    envoy_port,
    http_call,
    loopback_settings,
    start_gateway,
)
from tests.gateway.test_gateway_json import (
    BAD_REQUEST,
    ERROR_INFO,
    JSON,
    assert_gateway_error,
    bearer,
    register,
)
from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay_gateway import (
    HostPort,
    RateLimit,
    UnixSocket,
    admin_get,
    gateway_secret_env,
    identity_env_problems,
)

# Each service's own gateway secret, as Envoy's environment holds them.
GATEWAY_SECRETS = {
    service: f"{service}-gateway-secret-for-the-tests-0123456789abcdef"
    for service in ("auth", "wallet", "transfer", "kyc")
}
REGISTER = "vaultpay.auth.v1.AuthService.Register"
CLIENT_BURST = 20
REGISTER_BURST = 3
REGISTER_REFILL_SECONDS = 30.0
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


@pytest.fixture(scope="module")
def hardened(
    tmp_path_factory: pytest.TempPathFactory,
    descriptor_set: Path,
    auth_double: ThreadedAuthDouble,
    signing_key: SigningKey,
) -> Iterator[GatewayUnderTest]:
    """Small per-client budgets under a large global backstop; each service's own gateway
    secret in Envoy's environment; a readiness listener beside the private admin socket."""
    workdir = tmp_path_factory.mktemp("gateway-hardened")
    double = HostPort("127.0.0.1", auth_double.port)
    settings = loopback_settings(
        workdir,
        descriptor_set,
        {"auth": double, "wallet": double},
        rate_limit=RateLimit(max_tokens=100_000, tokens_per_fill=100_000),
        client_rate_limit=RateLimit(
            max_tokens=CLIENT_BURST, tokens_per_fill=1, fill_interval_seconds=60
        ),
        rpc_rate_limits={
            REGISTER: RateLimit(
                max_tokens=REGISTER_BURST,
                tokens_per_fill=1,
                fill_interval_seconds=REGISTER_REFILL_SECONDS,
            )
        },
        ready_listen=envoy_port(),
        cors_origins=(ALLOWED_ORIGIN,),
    )
    secrets = {gateway_secret_env(service): value for service, value in GATEWAY_SECRETS.items()}
    assert identity_env_problems(settings, secrets) == []
    running = start_gateway(workdir, settings, env=secrets)
    try:
        running.wait_until_token_accepted(signing_key.token())
        yield running
    finally:
        running.stop()


def _retry_after(reply: Reply) -> int:
    value = reply.headers["retry-after"]
    assert value.isdigit(), value
    return int(value)


# --- 2. rate limits per client address ---


def test_a_flooding_client_is_refused_while_another_client_gets_through(
    hardened: GatewayUnderTest,
) -> None:
    flooder, other = "127.0.0.2", "127.0.0.3"

    statuses = [
        hardened.call("GET", "/v1/auth/jwks", source=flooder).status
        for _ in range(CLIENT_BURST + 5)
    ]
    refused = hardened.call("GET", "/v1/auth/jwks", source=flooder)
    passed = hardened.call("GET", "/v1/auth/jwks", source=other)

    assert statuses[:CLIENT_BURST] == [200] * CLIENT_BURST
    assert statuses[-1] == 429
    assert_gateway_error(refused, 429, 8, "RATE_LIMITED")
    assert 1 <= _retry_after(refused) <= 60
    assert passed.status == 200, passed.body


def test_a_browser_can_read_the_gateways_own_refusals(
    hardened: GatewayUnderTest, gateway: GatewayUnderTest
) -> None:
    """A 429 of the rate limit (with its Retry-After) and a 413 of the body cap carry the
    CORS headers of an allowed origin (review of 2026-12-04: the filters that answer them ran
    before cors, so a browser could read neither)."""
    flooder, origin = "127.0.0.9", {"origin": ALLOWED_ORIGIN}
    for _ in range(CLIENT_BURST):
        hardened.call("GET", "/v1/auth/jwks", headers=origin, source=flooder)
    limited = hardened.call("GET", "/v1/auth/jwks", headers=origin, source=flooder)
    too_large = gateway.call(
        "POST", "/v1/auth/login", "x" * (MAX_REQUEST_BYTES + 1), {**JSON, **origin}
    )

    assert_gateway_error(limited, 429, 8, "RATE_LIMITED")
    assert_gateway_error(too_large, 413, 8, "PAYLOAD_TOO_LARGE")
    for reply in (limited, too_large):
        assert reply.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "retry-after" in limited.headers["access-control-expose-headers"]


def test_replies_carry_no_envoy_headers(gateway: GatewayUnderTest) -> None:
    reply = gateway.call("GET", "/v1/auth/jwks")

    assert reply.status == 200
    assert not [h for h in reply.headers if h.startswith("x-envoy-")], reply.headers


def test_a_rate_limited_json_call_says_so_in_words(hardened: GatewayUnderTest) -> None:
    flooder = "127.0.0.6"
    for _ in range(CLIENT_BURST):
        hardened.call("GET", "/v1/auth/jwks", source=flooder)

    refused = hardened.call("GET", "/v1/auth/jwks", source=flooder)

    status = assert_gateway_error(refused, 429, 8, "RATE_LIMITED")
    assert status["message"] == "too many requests; try again later"


def test_expensive_public_rpcs_have_a_tighter_budget_per_client(
    hardened: GatewayUnderTest,
) -> None:
    client, other = "127.0.0.4", "127.0.0.5"
    body = {"email": "budget@example.com", "password": "pw"}

    signups = [register(hardened, body, source=client) for _ in range(REGISTER_BURST + 1)]
    cheap = hardened.call("GET", "/v1/auth/jwks", source=client)
    elsewhere = register(hardened, body, source=other)

    assert [r.status for r in signups[:REGISTER_BURST]] == [200] * REGISTER_BURST
    assert_gateway_error(signups[-1], 429, 8, "RATE_LIMITED")
    assert 1 <= _retry_after(signups[-1]) <= math.ceil(REGISTER_REFILL_SECONDS)
    assert cheap.status == 200, "only the expensive RPC's budget is spent"
    assert elsewhere.status == 200, elsewhere.body


async def test_native_grpc_calls_spend_the_same_budget_as_json(
    hardened: GatewayUnderTest,
) -> None:
    """The budget follows the RPC, whether it is called by its REST path or its gRPC path
    (this test is the only client on 127.0.0.1 in this module)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{hardened.port}") as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        for _ in range(REGISTER_BURST):
            await stub.Register(auth_pb2.RegisterRequest(email="grpc@example.com"))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.Register(auth_pb2.RegisterRequest(email="grpc@example.com"))

    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    metadata = {
        **dict(error.value.initial_metadata() or ()),
        **dict(error.value.trailing_metadata() or ()),
    }
    assert str(metadata.get("retry-after", "")).isdigit()
    assert register(hardened, {"email": "json@example.com"}).status == 429


# --- 5. request line and headers are capped; upstream errors without ErrorInfo are generic ---


def test_a_long_request_line_is_414_status_json(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    reply = gateway.call(
        "GET",
        "/v1/admin/users?emailPrefix=" + "a" * 20_000,
        headers=bearer(signing_key.token()),
    )

    status = assert_gateway_error(reply, 414, 3, "URI_TOO_LONG")
    assert "metadata" not in status["message"]


def test_oversized_headers_are_431_status_json(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    reply = gateway.call(
        "GET", "/v1/auth/me", headers={**bearer(signing_key.token()), "x-filler": "a" * 20_000}
    )

    assert_gateway_error(reply, 431, 3, "HEADERS_TOO_LARGE")


def test_an_upstream_error_without_error_info_gets_a_generic_message(
    gateway: GatewayUnderTest,
) -> None:
    """The double answers Login with gRPC's UNIMPLEMENTED and its own text, no details."""
    reply = gateway.call(
        "POST", "/v1/auth/login", json.dumps({"email": "a@example.com", "password": "pw"}), JSON
    )

    assert b"test double" not in reply.body
    status = assert_gateway_error(reply, 501, 12, "UNIMPLEMENTED")
    assert status["message"] == "not implemented"


async def test_a_grpc_error_without_error_info_gets_a_generic_message(
    gateway: GatewayUnderTest,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await auth_pb2_grpc.AuthServiceStub(channel).Login(auth_pb2.LoginRequest())

    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error.value.details() == "not implemented"


def test_service_errors_with_error_info_keep_their_message(gateway: GatewayUnderTest) -> None:
    reply = register(gateway, {"email": "not-an-email"})

    assert reply.status == 400
    assert reply.json()["message"] == "invalid registration"


# --- 6. JSON body routes take nothing from the query string, and no key twice ---


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/v1/auth/login?password=hunter2", "password"),
        ("/v1/auth/refresh?refreshToken=secret-refresh-token", "refreshToken"),
        ("/v1/auth/register?email=a%40example.com&fullName=Ada", "email"),
    ],
)
def test_fields_in_the_query_string_of_a_body_route_are_refused(
    gateway: GatewayUnderTest, auth_double: ThreadedAuthDouble, path: str, key: str
) -> None:
    calls_before = auth_double.servicer.register_calls

    reply = gateway.call("POST", path, "{}", JSON)

    status = assert_gateway_error(reply, 400, 3, "QUERY_PARAMETER_NOT_ALLOWED")
    bad_request = next(d for d in status["details"] if d["@type"] == BAD_REQUEST)
    assert bad_request["fieldViolations"][0]["field"] == key
    assert key in status["message"]
    assert auth_double.servicer.register_calls == calls_before


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('{"email": "a@example.com", "email": "b@example.com"}', "email"),
        ('{"fullName": "Ada", "full_name": "Eve"}', "fullName"),
        ('{"email": "a@example.com", "email\\u0000": 1, "password": "x", "password": "y"}', None),
    ],
)
def test_duplicate_keys_in_a_json_body_are_refused(
    gateway: GatewayUnderTest, auth_double: ThreadedAuthDouble, body: str, key: str | None
) -> None:
    calls_before = auth_double.servicer.register_calls

    reply = gateway.call("POST", "/v1/auth/register", body, JSON)

    assert reply.status == 400, reply.body
    assert auth_double.servicer.register_calls == calls_before
    if key is not None:
        status = assert_gateway_error(reply, 400, 3, "DUPLICATE_FIELD")
        bad_request = next(d for d in status["details"] if d["@type"] == BAD_REQUEST)
        assert bad_request["fieldViolations"] == [{"field": key, "description": "duplicate key"}]


def test_duplicate_keys_are_refused_at_any_depth(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    body = '{"daily": {"amountMinor": "100", "currencyCode": "INR", "amountMinor": "9"}}'

    reply = gateway.call(
        "PUT", "/v1/wallets/me/limits/SEND", body, {**JSON, **bearer(signing_key.token())}
    )

    status = assert_gateway_error(reply, 400, 3, "DUPLICATE_FIELD")
    bad_request = next(d for d in status["details"] if d["@type"] == BAD_REQUEST)
    assert [v["field"] for v in bad_request["fieldViolations"]] == ["daily.amountMinor"]


# --- 7. no API response may be cached ---


def test_api_responses_are_not_to_be_stored(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    replies = {
        "token-bearing success": gateway.call(
            "GET", "/v1/auth/me", headers=bearer(signing_key.token())
        ),
        "public success": register(gateway, {"email": "cache@example.com"}),
        "refused token": gateway.call("GET", "/v1/auth/me"),
        "unknown path": gateway.call("GET", "/v1/nope"),
        "bad body": gateway.call("POST", "/v1/auth/register", "{nope", JSON),
    }

    for case, reply in replies.items():
        assert reply.headers.get("cache-control") == "no-store", case


def test_the_docs_stay_cacheable(gateway: GatewayUnderTest) -> None:
    reply = gateway.call("GET", "/docs/swagger-ui.css")

    assert reply.status == 200
    assert reply.headers["cache-control"] == "public, max-age=3600"


# --- 9. the gateway proves itself to the services ---


def test_the_gateway_identifies_itself_to_the_services_and_clients_cannot(
    hardened: GatewayUnderTest, signing_key: SigningKey
) -> None:
    """auth gets auth's own secret, never another service's (review of 2026-12-05: one secret
    for all let any service vouch for a client address at any other); a client's copy of the
    identity or the address header never passes."""
    forged = {
        "x-vaultpay-gateway-identity": GATEWAY_SECRETS["kyc"],
        "x-envoy-external-address": "203.0.113.9",
        "x-envoy-internal": "true",
    }

    reply = hardened.call(
        "GET", "/v1/auth/me", headers={**bearer(signing_key.token()), **forged}, source="127.0.0.7"
    )

    assert reply.status == 200, reply.body
    seen = json.loads(reply.json()["user"]["fullName"])
    assert seen["x-vaultpay-gateway-identity"] == GATEWAY_SECRETS["auth"]
    assert seen["x-envoy-external-address"] == "127.0.0.7"
    for secret in GATEWAY_SECRETS.values():
        assert secret not in hardened.config.read_text(), "the secrets stay out of the file"
        assert secret not in json.dumps(dict(reply.headers))


def test_a_client_on_envoys_own_loopback_address_cannot_name_its_address(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    """127.0.0.1 is an address Envoy takes for internal unless told otherwise (its default
    before 1.36, and still what an internal_address_config without CIDR ranges means on
    1.40), and an internal client keeps the x-envoy-external-address it sends. The public
    listener's internal addresses are none a client can have (`NO_INTERNAL_ADDRESSES`)."""
    forged = {"x-envoy-external-address": "203.0.113.9", "x-envoy-internal": "true"}

    reply = gateway.call(
        "GET", "/v1/auth/me", headers={**bearer(signing_key.token()), **forged}, source="127.0.0.1"
    )

    assert reply.status == 200, reply.body
    assert json.loads(reply.json()["user"]["fullName"])["x-envoy-external-address"] == "127.0.0.1"


# --- 10. the bearer scheme is case-insensitive; a wrong audience is 401 ---


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(
    gateway: GatewayUnderTest, signing_key: SigningKey, scheme: str
) -> None:
    reply = gateway.call(
        "GET", "/v1/auth/me", headers={"authorization": f"{scheme} {signing_key.token()}"}
    )

    assert reply.status == 200, reply.body
    assert json.loads(reply.json()["user"]["fullName"])["bearer"] == "True"


def test_another_scheme_is_still_refused(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    reply = gateway.call(
        "GET", "/v1/auth/me", headers={"authorization": f"Bearerx {signing_key.token()}"}
    )

    assert_gateway_error(reply, 401, 16, "TOKEN_INVALID")


def test_a_token_for_another_audience_is_401(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    reply = gateway.call("GET", "/v1/auth/me", headers=bearer(signing_key.token(aud="other")))

    assert_gateway_error(reply, 401, 16, "TOKEN_INVALID")


@pytest.fixture
async def channel(gateway: GatewayUnderTest) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        yield channel


async def test_a_token_for_another_audience_is_unauthenticated_over_grpc(
    channel: grpc.aio.Channel, signing_key: SigningKey
) -> None:
    token = signing_key.token(aud="other")

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await auth_pb2_grpc.AuthServiceStub(channel).GetMe(
            auth_pb2.GetMeRequest(), metadata=[("authorization", f"Bearer {token}")]
        )

    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


# --- 11. the admin interface is a Unix socket only its owner can use ---


def test_the_admin_interface_is_a_private_unix_socket(hardened: GatewayUnderTest) -> None:
    admin = hardened.settings.admin
    assert isinstance(admin, UnixSocket)
    config = json.loads(hardened.config.read_text())

    assert config["admin"]["address"] == {"pipe": {"path": str(admin.path), "mode": 0o600}}
    assert stat.S_ISSOCK(admin.path.stat().st_mode)
    assert stat.S_IMODE(admin.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(admin.path.parent.stat().st_mode) == 0o700
    assert admin_get(admin, "/ready") == (200, b"LIVE\n")


def test_the_readiness_listener_answers_ready_and_nothing_else(
    hardened: GatewayUnderTest,
) -> None:
    ready = hardened.settings.ready_listen
    assert ready is not None

    def call(method: str, path: str) -> Reply:
        return http_call(ready.port, method, path)

    assert call("GET", "/ready").status == 200
    for method, path in (("POST", "/quitquitquit"), ("GET", "/stats"), ("POST", "/ready")):
        assert call(method, path).status == 404, (method, path)
    assert hardened.envoy.process.poll() is None


# --- 12. Retry-After ---


def test_a_services_retry_info_becomes_retry_after(gateway: GatewayUnderTest) -> None:
    reply = register(gateway, {"email": "throttled@example.com"})

    assert reply.status == 429, reply.body
    expected = math.ceil(RETRY_DELAY.seconds + RETRY_DELAY.nanos / 1e9)
    assert _retry_after(reply) == expected
    status: dict[str, Any] = reply.json()
    assert status["message"] == "too many sign-ups from this address"
    assert {d["@type"] for d in status["details"]} == {ERROR_INFO, RETRY_INFO}


async def test_a_services_retry_info_reaches_grpc_clients_untouched(
    channel: grpc.aio.Channel,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await auth_pb2_grpc.AuthServiceStub(channel).Register(
            auth_pb2.RegisterRequest(email="throttled@example.com")
        )

    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(error.value)
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert status.details[1].Unpack(retry)
    assert retry.retry_delay == RETRY_DELAY
