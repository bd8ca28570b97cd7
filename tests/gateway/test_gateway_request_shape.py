"""Empty path variables and repeated query parameters are refused at the edge (json_body.py,
path_shapes.py), through a real Envoy.

In the shared `gateway`, transfer and kyc are down: a request the check lets through is
routed and gets 503; one it refuses gets 400 without reaching routing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from tests.gateway.auth_double import SigningKey
from tests.gateway.harness import GatewayUnderTest, loopback_settings, start_gateway
from tests.gateway.test_gateway_json import assert_gateway_error, bearer
from tests.gateway.test_gateway_json_body import violations
from vaultpay.authz.v1 import authz_pb2
from vaultpay_gateway import load_contract
from vaultpay_gateway.path_shapes import (
    EmptyVariable,
    Template,
    empty_variable_shapes,
    parse_template,
)

EMPTY = "must not be empty"
TWICE = "given more than once in the query string"


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


def test_templates_are_read_as_segments_variables_and_verb() -> None:
    assert parse_template("/v1/admin/disputes/{dispute_id}:resolve") == Template(
        ("v1", "admin", "disputes", None), ("dispute_id",), "resolve"
    )
    assert parse_template("/v1/wallets/me:freeze") == Template(
        ("v1", "wallets", "me"), (), "freeze"
    )
    assert parse_template("/v1/a/{b.c=*}/d") == Template(("v1", "a", None, "d"), ("b.c",), "")
    assert parse_template("/v1/{name=shelves/*}") is None
    assert parse_template("/v1/files/**") is None


@pytest.mark.parametrize(
    "query",
    [
        "pageSize=1&pageSize=50",
        "page_size=1&page_size=50",
        "pageSize=1&page_size=50",
        "page_size=50&pageToken=x&pageSize=50",
        "pageSize=1&pageSize=1",
    ],
)
def test_a_repeated_query_parameter_is_400_naming_the_field(
    gateway: GatewayUnderTest, signing_key: SigningKey, query: str
) -> None:
    reply = gateway.call("GET", f"/v1/transactions?{query}", headers=bearer(signing_key.token()))

    status = assert_gateway_error(reply, 400, 3, "DUPLICATE_FIELD")
    assert violations(status) == [{"field": "pageSize", "description": TWICE}]
    assert status["message"] == "duplicate query parameter: pageSize"


def test_every_repeated_query_parameter_is_named_once(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    query = "pageSize=1&pageToken=a&pageSize=2&pageSize=3&page_token=b"

    reply = gateway.call("GET", f"/v1/transactions?{query}", headers=bearer(signing_key.token()))

    status = assert_gateway_error(reply, 400, 3, "DUPLICATE_FIELD")
    assert [v["field"] for v in violations(status)] == ["pageSize", "pageToken"]


def test_distinct_query_parameters_still_pass(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    reply = gateway.call(
        "GET", "/v1/transactions?pageSize=5&pageToken=x", headers=bearer(signing_key.token())
    )

    assert_gateway_error(reply, 503, 14, "UNAVAILABLE")


# --- a field the proto declares repeated (the contract has none in a query yet) ---

SHELF = "/v1/shelves"


def _shelf_file() -> descriptor_pb2.FileDescriptorProto:
    """A public `GET /v1/shelves` whose request has a repeated filter and a nested one."""
    file = descriptor_pb2.FileDescriptorProto(
        name="vaultpay/shelf/v1/shelf.proto",
        package="vaultpay.shelf.v1",
        syntax="proto3",
        dependency=["google/api/annotations.proto", "vaultpay/authz/v1/authz.proto"],
    )
    types = descriptor_pb2.FieldDescriptorProto
    inner = file.message_type.add(name="Window")
    inner.field.add(name="from_day", number=1, type=types.TYPE_STRING, json_name="fromDay")
    inner.field.add(
        name="weekdays",
        number=2,
        type=types.TYPE_STRING,
        label=types.LABEL_REPEATED,
        json_name="weekdays",
    )
    request = file.message_type.add(name="ListShelvesRequest")
    request.field.add(
        name="genre_codes",
        number=1,
        type=types.TYPE_STRING,
        label=types.LABEL_REPEATED,
        json_name="genreCodes",
    )
    request.field.add(name="page_size", number=2, type=types.TYPE_INT32, json_name="pageSize")
    request.field.add(
        name="window",
        number=3,
        type=types.TYPE_MESSAGE,
        type_name=".vaultpay.shelf.v1.Window",
        json_name="window",
    )
    file.message_type.add(name="ListShelvesResponse")
    method = file.service.add(name="ShelfService").method.add(
        name="ListShelves",
        input_type=".vaultpay.shelf.v1.ListShelvesRequest",
        output_type=".vaultpay.shelf.v1.ListShelvesResponse",
    )
    method.options.Extensions[authz_pb2.rule].CopyFrom(authz_pb2.AccessRule(public=True))
    method.options.Extensions[annotations_pb2.http].CopyFrom(http_pb2.HttpRule(get=SHELF))
    return file


@pytest.fixture(scope="module")
def shelf_gateway(
    tmp_path_factory: pytest.TempPathFactory, descriptor_set: Path
) -> Iterator[GatewayUnderTest]:
    """The real contract plus `vaultpay.shelf.v1` (its upstream down: routed means 503)."""
    workdir = tmp_path_factory.mktemp("shelf-gateway")
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    files.file.append(_shelf_file())
    descriptor = workdir / "shelf.binpb"
    descriptor.write_bytes(files.SerializeToString())
    running = start_gateway(workdir, loopback_settings(workdir, descriptor, {}))
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize(
    "query",
    [
        "genreCodes=a&genreCodes=b",
        "genre_codes=a&genreCodes=b&pageSize=3",
        "window.weekdays=MON&window.weekdays=TUE&window.fromDay=x",
    ],
)
def test_a_field_declared_repeated_still_takes_several_values(
    shelf_gateway: GatewayUnderTest, query: str
) -> None:
    reply = shelf_gateway.call("GET", f"{SHELF}?{query}")

    assert_gateway_error(reply, 503, 14, "UNAVAILABLE")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("genreCodes=a&pageSize=1&page_size=2", "pageSize"),
        ("window.fromDay=a&window.from_day=b", "window.fromDay"),
    ],
)
def test_a_single_field_beside_repeated_ones_is_still_refused_twice(
    shelf_gateway: GatewayUnderTest, query: str, field: str
) -> None:
    reply = shelf_gateway.call("GET", f"{SHELF}?{query}")

    status = assert_gateway_error(reply, 400, 3, "DUPLICATE_FIELD")
    assert violations(status) == [{"field": field, "description": TWICE}]
