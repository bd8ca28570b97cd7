"""One spelling of field paths per client: JSON names for JSON clients, proto names for gRPC.

google.rpc.BadRequest's documentation spells a violation's `field` `full_name` in proto and
`fullName` in JSON. The services write proto paths; the gateway's `replies` filter renames
them in JSON replies, and the gateway's own checks use JSON names (replies.py, json_body.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.gateway.auth_double import PROTO_PATH_VIOLATIONS, described
from tests.gateway.harness import GatewayUnderTest
from tests.gateway.test_gateway_json import ERROR_INFO, JSON, assert_gateway_error, bearer
from tests.gateway.test_gateway_json_body import violations
from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay_gateway.contract import load_contract

JSON_PATHS = [
    "fullName",
    "limits[1].daily.amountMinor",
    "labels['some_key'].value1",
    "request",
    "accountNumber",
    "bankAccount.accountNumber",
]


def _register(gateway: GatewayUnderTest, body: dict[str, Any]) -> Any:
    return gateway.call("POST", "/v1/auth/register", json.dumps(body), JSON)


def test_a_services_proto_paths_reach_json_clients_as_json_paths(
    gateway: GatewayUnderTest,
) -> None:
    reply = _register(gateway, {"email": "fields@example.com"})

    assert reply.status == 400, reply.body
    status = reply.json()
    assert [v["field"] for v in violations(status)] == JSON_PATHS
    # The message names them as the violations do (it named `full_name` to a JSON client).
    # (The first description holds a quote and a backslash: escapes do not end the message.)
    assert status["message"] == "invalid request: " + "; ".join(
        f"{path}: {described(proto)}"
        for path, proto in zip(JSON_PATHS, PROTO_PATH_VIOLATIONS, strict=True)
    )
    info = next(d for d in status["details"] if d["@type"] == ERROR_INFO)
    assert (info["domain"], info["metadata"]) == ("vaultpay.auth", {"field": "full_name"})


async def test_grpc_clients_keep_the_proto_paths(gateway: GatewayUnderTest) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.Register(auth_pb2.RegisterRequest(email="fields@example.com"))

    status = rpc_status.from_call(error.value)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [v.field for v in bad_request.field_violations] == list(PROTO_PATH_VIOLATIONS)


@pytest.mark.parametrize("spelling", ["fullName", "full_name"])
def test_the_body_check_names_a_known_field_by_its_json_name_in_either_spelling(
    gateway: GatewayUnderTest, spelling: str
) -> None:
    reply = gateway.call("POST", "/v1/auth/register", f'{{"{spelling}":"A","full_name":"B"}}', JSON)

    status = assert_gateway_error(reply, 400, 3, "DUPLICATE_FIELD")
    assert violations(status) == [{"field": "fullName", "description": "duplicate key"}]


def test_the_body_check_names_an_unknown_key_as_sent(gateway: GatewayUnderTest) -> None:
    reply = _register(gateway, {"email": "a@b.c", "is_admin": True})

    status = assert_gateway_error(reply, 400, 3, "UNKNOWN_FIELD")
    assert violations(status) == [{"field": "is_admin", "description": "unknown field"}]


def test_query_checks_name_fields_by_their_json_name(
    gateway: GatewayUnderTest, signing_key: Any
) -> None:
    token = bearer(signing_key.token())

    path_bound = gateway.call("GET", "/v1/wallets/VPY-AAAAAA?wallet_id=VPY-B", headers=token)
    in_query = gateway.call("POST", "/v1/auth/refresh?refresh_token=x", "{}", JSON)

    assert violations(assert_gateway_error(path_bound, 400, 3, "UNKNOWN_FIELD")) == [
        {"field": "walletId", "description": "set by the URL path, not by the query"}
    ]
    status = assert_gateway_error(in_query, 400, 3, "QUERY_PARAMETER_NOT_ALLOWED")
    assert [v["field"] for v in violations(status)] == ["refreshToken"]


def test_every_field_of_the_contract_has_protocs_default_json_name(descriptor_set: Path) -> None:
    """The replies filter renames services' paths by protoc's rule (`_x` -> `X`), without the
    descriptors: a custom json_name would make it name a field the client does not know."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    contract = load_contract(descriptor_set)
    own = [m for name, m in contract.messages.items() if name.startswith("vaultpay.")]

    assert own and files
    for message in own:
        for field in message.fields:
            head, *rest = field.name.split("_")
            assert field.json_name == head + "".join(p[:1].upper() + p[1:] for p in rest), (
                message.full_name,
                field.name,
            )
