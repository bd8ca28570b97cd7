"""The acceptance paths of the foundation, as a user takes them: curl, grpcurl, a gRPC stub."""

from __future__ import annotations

import json
import subprocess

import grpc
import pytest

from tests.e2e.conftest import GRPCURL, PASSWORD, Gateway
from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay_devstack.mesh import Mesh
from vaultpay_devstack.paths import DESCRIPTOR_SET


def _curl(*args: str) -> dict[str, object]:
    out = subprocess.run(
        ["curl", "-sS", "--fail-with-body", *args], capture_output=True, text=True, timeout=20
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return dict(json.loads(out.stdout))


def test_register_login_me_with_curl(gateway: Gateway) -> None:
    base = gateway.base_url
    email = "curl-" + PASSWORD.split()[2] + "-" + str(abs(hash(base)))[:6] + "@example.com"
    body = json.dumps({"email": email, "password": PASSWORD, "fullName": "Curl User"})
    registered = _curl(
        f"{base}/v1/auth/register", "-H", "content-type: application/json", "-d", body
    )
    login = json.dumps({"email": email, "password": PASSWORD})
    tokens = _curl(f"{base}/v1/auth/login", "-H", "content-type: application/json", "-d", login)[
        "tokens"
    ]
    assert isinstance(tokens, dict)
    me = _curl(f"{base}/v1/auth/me", "-H", f"authorization: Bearer {tokens['accessToken']}")
    assert me["user"] == registered["user"] | {"updateTime": me["user"]["updateTime"]}  # type: ignore[index,operator]


def test_grpcurl_lists_services_by_reflection_and_calls_get_me(
    mesh: Mesh, gateway: Gateway
) -> None:
    token = gateway.user_token()
    listed = subprocess.run(
        [GRPCURL, "-plaintext", mesh.grpc_address("auth"), "list"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert listed.returncode == 0, listed.stderr
    assert {
        "vaultpay.auth.v1.AuthService",
        "vaultpay.auth.v1.AuthAdminService",
        "grpc.health.v1.Health",
    } <= set(listed.stdout.split())
    for target, extra in (
        (mesh.grpc_address("auth"), []),
        (mesh.gateway_url.removeprefix("http://"), ["-protoset", str(DESCRIPTOR_SET)]),
    ):
        called = subprocess.run(
            [
                GRPCURL,
                "-plaintext",
                *extra,
                "-H",
                f"authorization: Bearer {token}",
                target,
                "vaultpay.auth.v1.AuthService/GetMe",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert called.returncode == 0, called.stderr
        assert json.loads(called.stdout)["user"]["role"] == "ROLE_USER"


async def test_native_grpc_through_the_gateway(mesh: Mesh, gateway: Gateway) -> None:
    token = gateway.user_token()
    async with grpc.aio.insecure_channel(mesh.gateway_url.removeprefix("http://")) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        reply = await stub.GetMe(
            auth_pb2.GetMeRequest(), metadata=(("authorization", f"Bearer {token}"),)
        )
        assert reply.user.role == 1
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetMe(auth_pb2.GetMeRequest())
        assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_user_token_on_an_admin_route_is_403_with_a_reason(gateway: Gateway) -> None:
    reply = gateway.call("GET", "/v1/admin/users", token=gateway.user_token())
    assert reply.status == 403
    assert reply.body["code"] == 7  # PERMISSION_DENIED
    assert reply.error_reason() == "INSUFFICIENT_PERMISSIONS"
    assert reply.headers["content-type"].startswith("application/json")


def test_invalid_registration_is_400_with_field_violations(gateway: Gateway) -> None:
    _, reply = gateway.register("not-an-email")
    assert reply.status == 400
    assert reply.body["code"] == 3
    assert reply.field_violations() == ["email"]
    weak = gateway.call(
        "POST",
        "/v1/auth/register",
        {"email": "weak@example.com", "password": "short", "fullName": "W"},
    )
    assert (weak.status, weak.field_violations()) == (400, ["password"])
    huge = gateway.call(
        "POST",
        "/v1/auth/register",
        {"email": "big@example.com", "password": PASSWORD, "fullName": "N" * 500},
    )
    # auth names it `full_name` (proto); a JSON client reads the JSON name, as it sent it.
    assert (huge.status, huge.field_violations()) == (400, ["fullName"])
    # None of them was written: registering the same addresses properly still works.
    for email in ("weak@example.com", "big@example.com"):
        assert gateway.register(email)[1].status == 200


def test_unknown_json_fields_and_wrong_types_are_400(gateway: Gateway) -> None:
    unknown = gateway.call(
        "POST",
        "/v1/auth/register",
        {
            "email": "u@example.com",
            "password": PASSWORD,
            "fullName": "U",
            "role": "ROLE_ADMIN",
            "isAdmin": True,
        },
    )
    assert unknown.status == 400
    assert unknown.body["code"] == 3
    wrong_type = gateway.call(
        "POST", "/v1/auth/register", {"email": ["x"], "password": PASSWORD, "fullName": "U"}
    )
    assert (wrong_type.status, wrong_type.body["code"]) == (400, 3)
    broken = gateway.call("POST", "/v1/auth/register", raw=b"{not json")
    assert broken.status == 400
    # Nothing was written by the rejected requests.
    assert gateway.register("u@example.com")[1].status == 200


def test_duplicate_email_is_409(gateway: Gateway) -> None:
    email, first = gateway.register()
    assert first.status == 200
    again = gateway.call(
        "POST",
        "/v1/auth/register",
        {"email": email.upper(), "password": PASSWORD, "fullName": "E2E"},
    )
    assert again.status == 409
    assert again.error_reason() == "EMAIL_ALREADY_REGISTERED"


def test_jwks_is_a_standard_jwk_set(gateway: Gateway) -> None:
    reply = gateway.call("GET", "/v1/auth/jwks")
    assert reply.status == 200
    assert {"kty", "crv", "x", "kid", "alg", "use"} <= set(reply.body["keys"][0])


def test_unknown_path_is_404_json(gateway: Gateway) -> None:
    reply = gateway.call("GET", "/v1/nope")
    assert reply.status == 404
    assert reply.body["code"] == 5


def test_internal_rpcs_are_not_reachable_through_the_gateway(mesh: Mesh) -> None:
    called = subprocess.run(
        [
            GRPCURL,
            "-plaintext",
            "-protoset",
            str(DESCRIPTOR_SET),
            "-d",
            '{"client_id":"wallet","client_secret":"x"}',
            mesh.gateway_url.removeprefix("http://"),
            "vaultpay.auth.v1.AuthInternalService/IssueServiceToken",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert called.returncode != 0
    assert (
        "Unimplemented" in called.stdout + called.stderr
        or "NotFound" in called.stdout + called.stderr
    )
