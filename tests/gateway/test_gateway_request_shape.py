"""Empty path variables are refused at the edge (json_body.py, path_shapes.py), through a
real Envoy.

In the shared `gateway`, transfer and kyc are down: a request the check lets through is
routed and gets 503; one it refuses gets 400 without reaching routing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.auth_double import SigningKey
from tests.gateway.harness import GatewayUnderTest
from tests.gateway.test_gateway_json import assert_gateway_error, bearer
from tests.gateway.test_gateway_json_body import violations
from vaultpay_gateway import load_contract
from vaultpay_gateway.path_shapes import EmptyVariable, empty_variable_shapes

EMPTY = "must not be empty"


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/transactions/reference/", "referenceId"),
        ("/v1/transactions/reference", "referenceId"),
        ("/v1/transactions/reference//", "referenceId"),
        ("/v1/transactions/%72eference/", "referenceId"),
        ("/v1/transactions/request/", "requestId"),
    ],
)
def test_an_empty_path_variable_is_400_naming_it_not_another_rpcs_field(
    gateway: GatewayUnderTest, signing_key: SigningKey, path: str, field: str
) -> None:
    """The transcoder drops the empty last segment and routes the rest to GetTransaction
    with transaction_id "reference", whose error would name transactionId."""
    reply = gateway.call("GET", path, headers=bearer(signing_key.token()))

    status = assert_gateway_error(reply, 400, 3, "INVALID_REQUEST")
    assert violations(status) == [{"field": field, "description": EMPTY}]
    assert status["message"] == f"{field}: {EMPTY}"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/transactions/VP-TXN-ABCD2345",
        "/v1/transactions/reference/VP-TXN-ABCD2345",
        "/v1/transactions/references/",
        "/v1/transactions/",
        "/v1/admin/kyc/",
        "/v1/admin/users/",
    ],
)
def test_other_paths_and_collections_with_a_trailing_slash_are_still_routed(
    gateway: GatewayUnderTest, signing_key: SigningKey, path: str
) -> None:
    """Routed: transfer and kyc are down (503), auth's double lacks ListUsers (501)."""
    reply = gateway.call("GET", path, headers=bearer(signing_key.token()))

    assert reply.status in (501, 503), reply.body


def test_only_the_misrouted_empty_variables_of_the_contract_are_listed(
    descriptor_set: Path,
) -> None:
    """Wallets, kyc and admin bindings with a last variable either leave a collection (served
    as itself) or a path nothing matches (404): only these two reach another RPC."""
    shapes = empty_variable_shapes(load_contract(descriptor_set))

    assert [(s.method, s.path, s.field, s.proto_field) for s in shapes] == [
        ("GET", "/v1/transactions/reference", "referenceId", "reference_id"),
        ("GET", "/v1/transactions/request", "requestId", "request_id"),
    ]
    assert all(isinstance(s, EmptyVariable) for s in shapes)
