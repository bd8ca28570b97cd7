"""grpcurl through the one public port, by server reflection (the gateway's reflection
server, vaultpay_gateway.reflection): the public services are listed, described and called;
the *InternalService services are neither listed nor callable."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.conftest import GRPCURL, Gateway
from vaultpay_devstack.mesh import Mesh
from vaultpay_devstack.paths import DESCRIPTOR_SET

PUBLIC = {
    "vaultpay.auth.v1.AuthService",
    "vaultpay.auth.v1.AuthAdminService",
    "vaultpay.wallet.v1.WalletService",
    "vaultpay.wallet.v1.WalletAdminService",
    "vaultpay.transfer.v1.TransferService",
    "vaultpay.transfer.v1.TransferAdminService",
    "vaultpay.kyc.v1.KycService",
    "vaultpay.kyc.v1.KycAdminService",
}


def _call(mesh: Mesh, *flags: str, method: str) -> subprocess.CompletedProcess[str]:
    target = mesh.gateway_url.removeprefix("http://")
    return subprocess.run(
        [GRPCURL, "-plaintext", *flags, target, method],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _run(mesh: Mesh, *words: str) -> subprocess.CompletedProcess[str]:
    target = mesh.gateway_url.removeprefix("http://")
    return subprocess.run(
        [GRPCURL, "-plaintext", target, *words],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_list_names_every_public_service_and_no_internal_one(mesh: Mesh) -> None:
    listed = _run(mesh, "list")

    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert services >= PUBLIC
    assert not [s for s in services if s.endswith("InternalService")]
    assert services - PUBLIC <= {
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }


def test_describe_a_wallet_message_and_service(mesh: Mesh) -> None:
    message = _run(mesh, "describe", "vaultpay.wallet.v1.Wallet")
    service = _run(mesh, "describe", "vaultpay.wallet.v1.WalletService")

    assert message.returncode == 0, message.stderr
    assert "message Wallet {" in message.stdout
    assert "wallet_id" in message.stdout
    assert service.returncode == 0, service.stderr
    assert "rpc GetMyWallet" in service.stdout


def test_get_jwks_through_the_gateway_by_reflection(mesh: Mesh, gateway: Gateway) -> None:
    called = _call(mesh, "-d", "{}", method="vaultpay.auth.v1.AuthService/GetJwks")

    assert called.returncode == 0, called.stderr
    keys = json.loads(called.stdout)["keys"]
    assert keys
    assert {k["kid"] for k in keys} == {
        k["kid"] for k in gateway.call("GET", "/v1/auth/jwks").body["keys"]
    }


def test_get_me_through_the_gateway_by_reflection(mesh: Mesh, gateway: Gateway) -> None:
    token = gateway.user_token()

    called = _call(
        mesh, "-H", f"authorization: Bearer {token}", method="vaultpay.auth.v1.AuthService/GetMe"
    )

    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout)["user"]["role"] == "ROLE_USER"


@pytest.mark.parametrize(
    "method",
    [
        "vaultpay.auth.v1.AuthInternalService/IntrospectToken",
        "vaultpay.wallet.v1.WalletInternalService/SetKycTier",
    ],
)
def test_internal_services_are_unknown_to_reflection_and_refused(mesh: Mesh, method: str) -> None:
    service = method.split("/")[0]

    described = _run(mesh, "describe", service)
    by_reflection = _call(mesh, "-d", "{}", method=method)

    assert described.returncode != 0
    assert "not found" in described.stderr.lower()
    assert by_reflection.returncode != 0
    assert "does not expose service" in by_reflection.stderr


def test_internal_service_is_refused_even_with_its_descriptors(mesh: Mesh) -> None:
    """A caller that has the descriptor set anyway gets UNIMPLEMENTED from the gateway."""
    called = _call(
        mesh,
        "-protoset",
        str(DESCRIPTOR_SET),
        "-d",
        "{}",
        method="vaultpay.auth.v1.AuthInternalService/IntrospectToken",
    )

    assert called.returncode != 0
    assert "Unimplemented" in called.stderr
