"""The JSON body schemas derived from the contract, as data: no Envoy process."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from vaultpay.authz.v1 import authz_pb2
from vaultpay_gateway import BodySchemas, body_schemas, load_contract
from vaultpay_gateway.body_schema import (
    ANY_VALUE,
    LIST_NOT_EXPECTED,
    PATH_BOUND_FIELD,
    UNKNOWN_FIELD,
    ValueRule,
    Violation,
    path_variables,
)
from vaultpay_gateway.json_body import checker_lua

FieldType = descriptor_pb2.FieldDescriptorProto
LIBRARY = "/vaultpay.library.v1.LibraryService"


def _field(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    type_name: str | None = None,
    *,
    repeated: bool = False,
    json_name: str | None = None,
) -> None:
    field = message.field.add(name=name, number=number)
    field.json_name = json_name or "".join(
        part if i == 0 else part.capitalize() for i, part in enumerate(name.split("_"))
    )
    field.label = FieldType.LABEL_REPEATED if repeated else FieldType.LABEL_OPTIONAL
    if type_name is None:
        field.type = FieldType.TYPE_STRING
    else:
        field.type = FieldType.TYPE_MESSAGE
        field.type_name = type_name


def _map_entry(parent: descriptor_pb2.DescriptorProto, name: str, value: str | None) -> str:
    entry = parent.nested_type.add(name=name)
    entry.options.map_entry = True
    _field(entry, "key", 1)
    _field(entry, "value", 2, value)
    return f".vaultpay.library.v1.{parent.name}.{name}"


def _rpc(
    service: descriptor_pb2.ServiceDescriptorProto,
    name: str,
    request: str,
    rule: http_pb2.HttpRule,
    *,
    internal: bool = False,
) -> None:
    method = service.method.add(name=name, input_type=request, output_type=".google.protobuf.Empty")
    method.options.Extensions[authz_pb2.rule].CopyFrom(
        authz_pb2.AccessRule(public=not internal, internal=internal)
    )
    method.options.Extensions[annotations_pb2.http].CopyFrom(rule)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> BodySchemas:
    """A synthetic contract with the shapes the real one does not have (yet)."""
    file = descriptor_pb2.FileDescriptorProto(
        name="vaultpay/library/v1/library.proto", package="vaultpay.library.v1"
    )
    author = file.message_type.add(name="Author")
    _field(author, "display_name", 1)
    book = file.message_type.add(name="Book")
    _field(book, "name", 1)
    _field(book, "title", 2, json_name='head"line')
    _field(book, "sequel", 3, ".vaultpay.library.v1.Book")
    _field(
        book,
        "authors",
        4,
        _map_entry(book, "AuthorsEntry", ".vaultpay.library.v1.Author"),
        repeated=True,
    )
    _field(book, "labels", 5, _map_entry(book, "LabelsEntry", None), repeated=True)
    _field(book, "publish_time", 6, ".google.protobuf.Timestamp")
    _field(book, "editors", 7, ".vaultpay.library.v1.Author", repeated=True)
    create = file.message_type.add(name="CreateBookRequest")
    _field(create, "parent", 1)
    _field(create, "book", 2, ".vaultpay.library.v1.Book")
    update = file.message_type.add(name="UpdateBookRequest")
    _field(update, "book", 1, ".vaultpay.library.v1.Book")
    _field(update, "request_id", 2)

    service = file.service.add(name="LibraryService")
    _rpc(
        service,
        "CreateBook",
        ".vaultpay.library.v1.CreateBookRequest",
        http_pb2.HttpRule(post="/v1/{parent=shelves/*}/books", body="book"),
    )
    _rpc(
        service,
        "UpdateBook",
        ".vaultpay.library.v1.UpdateBookRequest",
        http_pb2.HttpRule(patch="/v1/{book.name=shelves/*/books/*}", body="*"),
    )
    _rpc(service, "Upload", ".google.api.HttpBody", http_pb2.HttpRule(post="/v1/uploads", body="*"))
    _rpc(
        service,
        "Sync",
        ".vaultpay.library.v1.CreateBookRequest",
        http_pb2.HttpRule(post="/v1/sync", body="*"),
        internal=True,
    )
    twice = http_pb2.HttpRule(post="/v1/{parent=shelves/*}/books:import", body="*")
    twice.additional_bindings.add(put="/v1/{parent=shelves/*}/books:import", body="book")
    _rpc(service, "ImportBook", ".vaultpay.library.v1.CreateBookRequest", twice)

    path = tmp_path_factory.mktemp("library") / "library.binpb"
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=[file]).SerializeToString())
    return body_schemas(load_contract(path))


def _root(schemas: BodySchemas, grpc_path: str) -> ValueRule:
    (binding,) = schemas.rpcs[grpc_path]
    return binding.body


def test_path_variables_are_field_paths() -> None:
    assert path_variables("/v1/{book.name=shelves/*/books/*}/x/{id}:go") == {
        ("book", "name"),
        ("id",),
    }
    assert path_variables("/v1/wallets/me") == frozenset()


def test_body_field_is_the_fields_message_and_both_spellings_are_known(
    library: BodySchemas,
) -> None:
    rule = _root(library, f"{LIBRARY}/CreateBook")

    assert rule == ValueRule("vaultpay.library.v1.Book")
    assert library.violations(rule, {"title": "t", 'head"line': "t", "publishTime": "x"}) == []
    assert library.violations(rule, {"publish_time": "x", "Title": "t", "parent": "p"}) == [
        Violation("Title", UNKNOWN_FIELD),
        Violation("parent", UNKNOWN_FIELD),
    ]


def test_nested_path_variable_is_refused_in_the_body_only_where_it_binds(
    library: BodySchemas,
) -> None:
    rule = _root(library, f"{LIBRARY}/UpdateBook")

    assert library.violations(rule, {"book": {"name": "n", "title": "t"}}) == [
        Violation("book.name", PATH_BOUND_FIELD)
    ]
    # The sequel is a plain Book again: its name is an ordinary field.
    assert library.violations(rule, {"requestId": "r", "book": {"sequel": {"name": "n"}}}) == []


def test_repeated_maps_and_well_known_types(library: BodySchemas) -> None:
    rule = _root(library, f"{LIBRARY}/CreateBook")
    body = {
        "editors": [{"displayName": "a"}, {"display_name": "b", "email": "x"}],
        "authors": {"any key": {"displayName": "a"}, "k2": {"bogus": 1}},
        "labels": {"free": "form"},
        "publishTime": {"not": "checked here"},
        "sequel": {"sequel": {"oops": True}},
    }

    assert library.violations(rule, body) == [
        Violation("editors[1].email", UNKNOWN_FIELD),
        Violation("authors.k2.bogus", UNKNOWN_FIELD),
        Violation("sequel.sequel.oops", UNKNOWN_FIELD),
    ]


def test_opaque_bodies_and_unrouted_rpcs_have_no_schema(library: BodySchemas) -> None:
    assert f"{LIBRARY}/Upload" not in library.rpcs
    assert f"{LIBRARY}/Sync" not in library.rpcs


def test_bindings_that_disagree_about_the_body_are_kept_apart(library: BodySchemas) -> None:
    post, put = library.rpcs[f"{LIBRARY}/ImportBook"]

    assert (post.method, put.method) == ("POST", "PUT")
    assert post.body != put.body
    assert '{ b = { { "POST", ' in checker_lua(library)


def test_lua_tables_escape_names_and_mark_path_bound_fields(library: BodySchemas) -> None:
    lua = checker_lua(library)

    assert '["head\\034line"] = "s"' in lua
    assert '["name"] = false' in lua
    assert '"/vaultpay.library.v1.LibraryService/CreateBook"' in lua


# --- the real contract ---


@pytest.fixture(scope="module")
def real(descriptor_set: Path) -> BodySchemas:
    return body_schemas(load_contract(descriptor_set))


def test_every_routed_http_rpc_has_a_body_schema(descriptor_set: Path, real: BodySchemas) -> None:
    contract = load_contract(descriptor_set)

    assert set(real.rpcs) == {r.grpc_path for r in contract.routed_rpcs() if r.http}
    assert all(b.body != ANY_VALUE for bindings in real.rpcs.values() for b in bindings)


def test_register_accepts_json_and_proto_names(real: BodySchemas) -> None:
    rule = _root(real, "/vaultpay.auth.v1.AuthService/Register")

    assert rule.message is not None
    assert set(real.messages[rule.message].fields) == {"email", "password", "fullName", "full_name"}


def test_top_up_checks_the_money_inside(real: BodySchemas) -> None:
    rule = _root(real, "/vaultpay.transfer.v1.TransferService/TopUp")

    assert real.violations(rule, {"amount": {"currencyCode": "INR", "amount_minor": "5"}}) == []
    assert real.violations(rule, {"amount": {"units": 5}, "isAdmin": True}) == [
        Violation("amount.units", UNKNOWN_FIELD),
        Violation("isAdmin", UNKNOWN_FIELD),
    ]


def test_violations_name_a_known_field_by_its_json_name_in_either_spelling(
    real: BodySchemas,
) -> None:
    top_up = _root(real, "/vaultpay.transfer.v1.TransferService/TopUp")

    assert real.violations(top_up, {"amount": {"amount_minor": []}, "payment_method": []}) == [
        Violation("amount.amountMinor", LIST_NOT_EXPECTED),
        Violation("paymentMethod", LIST_NOT_EXPECTED),
    ]
    assert real.violations(top_up, {"is_admin": True}) == [Violation("is_admin", UNKNOWN_FIELD)]


def test_a_list_is_refused_where_the_field_is_single_and_taken_where_repeated(
    real: BodySchemas,
) -> None:
    top_up = _root(real, "/vaultpay.transfer.v1.TransferService/TopUp")
    limits = _root(real, "/vaultpay.wallet.v1.WalletAdminService/AdminSetWalletLimits")

    assert real.violations(top_up, {"amount": [{}], "paymentMethod": ["x"]}) == [
        Violation("amount", LIST_NOT_EXPECTED),
        Violation("paymentMethod", LIST_NOT_EXPECTED),
    ]
    assert real.violations(top_up, {"amount": {"amountMinor": []}}) == [
        Violation("amount.amountMinor", LIST_NOT_EXPECTED)
    ]
    assert real.violations(limits, {"reason": "r", "limits": [{}, {}]}) == []
    assert real.violations(limits, {"reason": ["r"], "limits": [{"daily": []}]}) == [
        Violation("reason", LIST_NOT_EXPECTED),
        Violation("limits[0].daily", LIST_NOT_EXPECTED),
    ]


def test_admin_set_wallet_limits_refuses_the_path_bound_wallet_id(real: BodySchemas) -> None:
    rule = _root(real, "/vaultpay.wallet.v1.WalletAdminService/AdminSetWalletLimits")
    body = {"walletId": "VPY-OTHER", "reason": "r", "limits": [{}, {"foo": 1}]}

    assert real.violations(rule, body) == [
        Violation("walletId", PATH_BOUND_FIELD),
        Violation("limits[1].foo", UNKNOWN_FIELD),
    ]
