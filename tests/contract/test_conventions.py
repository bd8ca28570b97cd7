"""Contract conventions from STYLE.md that buf's STANDARD lint does not check."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.protobuf import descriptor_pb2

from vaultpay_devstack.routes import ContractMethod, http_route

_Descriptors = descriptor_pb2.FileDescriptorSet
_Field = descriptor_pb2.FieldDescriptorProto
_Message = descriptor_pb2.DescriptorProto

# Descriptor field numbers that make up SourceCodeInfo paths (descriptor.proto).
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM, _MESSAGE_ONEOF = 2, 3, 4, 8
_ENUM_VALUE, _SERVICE_METHOD = 2, 2

# auth's contract came before the request_id rule; its owner decides how to adopt it.
_PREDATES_REQUEST_ID = {"vaultpay.auth.v1"}
_READ_PREFIXES = ("Get", "List", "Watch", "Lookup", "AdminGet", "AdminList")


def _own_files(contract: _Descriptors) -> list[descriptor_pb2.FileDescriptorProto]:
    return [f for f in contract.file if f.name.startswith("vaultpay/")]


def _enum_paths(
    enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], name: str
) -> Iterator[tuple[tuple[int, ...], str]]:
    yield path, name
    for i, value in enumerate(enum.value):
        yield (*path, _ENUM_VALUE, i), f"{name}.{value.name}"


def _message_paths(
    message: _Message, path: tuple[int, ...], name: str
) -> Iterator[tuple[tuple[int, ...], str]]:
    if message.options.map_entry:
        return  # synthesised for a map field, which carries the comment
    yield path, name
    for i, field in enumerate(message.field):
        yield (*path, _MESSAGE_FIELD, i), f"{name}.{field.name}"
    for i, oneof in enumerate(message.oneof_decl):
        if not oneof.name.startswith("_"):  # proto3 `optional` synthesises these
            yield (*path, _MESSAGE_ONEOF, i), f"{name}.{oneof.name}"
    for i, nested in enumerate(message.nested_type):
        yield from _message_paths(nested, (*path, _MESSAGE_NESTED, i), f"{name}.{nested.name}")
    for i, enum in enumerate(message.enum_type):
        yield from _enum_paths(enum, (*path, _MESSAGE_ENUM, i), f"{name}.{enum.name}")


def _documentable(
    proto: descriptor_pb2.FileDescriptorProto,
) -> Iterator[tuple[tuple[int, ...], str]]:
    for i, service in enumerate(proto.service):
        yield (_FILE_SERVICE, i), service.name
        for j, method in enumerate(service.method):
            yield (_FILE_SERVICE, i, _SERVICE_METHOD, j), f"{service.name}.{method.name}"
    for i, message in enumerate(proto.message_type):
        yield from _message_paths(message, (_FILE_MESSAGE, i), message.name)
    for i, enum in enumerate(proto.enum_type):
        yield from _enum_paths(enum, (_FILE_ENUM, i), enum.name)


def test_every_service_rpc_message_field_and_enum_value_has_a_comment(
    contract: _Descriptors,
) -> None:
    """The comments become the API docs clients read (STYLE.md, Contracts)."""
    bare = []
    for proto in _own_files(contract):
        commented = {
            tuple(loc.path)
            for loc in proto.source_code_info.location
            if loc.leading_comments.strip()
        }
        bare += [
            f"{proto.name}: {name}" for path, name in _documentable(proto) if path not in commented
        ]
    assert not bare, "add a leading comment to:\n" + "\n".join(bare)


def test_no_field_is_floating_point(contract: _Descriptors) -> None:
    """Money is integer minor units everywhere; a float field is how rounding bugs start."""
    floating = (_Field.TYPE_FLOAT, _Field.TYPE_DOUBLE)
    found = []
    for proto in _own_files(contract):
        stack = [(m, f"{proto.package}.{m.name}") for m in proto.message_type]
        while stack:
            message, name = stack.pop()
            found += [f"{name}.{f.name}" for f in message.field if f.type in floating]
            stack += [(n, f"{name}.{n.name}") for n in message.nested_type]
    assert not found, found


@pytest.fixture(scope="module")
def messages(contract: _Descriptors) -> dict[str, _Message]:
    """Top-level messages by the type name fields and methods refer to (`.pkg.Name`)."""
    return {
        f".{proto.package}.{message.name}": message
        for proto in _own_files(contract)
        for message in proto.message_type
    }


def _fields(message: _Message) -> dict[str, _Field]:
    return {f.name: f for f in message.field}


def test_list_rpcs_paginate(methods: list[ContractMethod], messages: dict[str, _Message]) -> None:
    """AIP-158: page_size and page_token in, next_page_token out."""
    problems = []
    for m in methods:
        if not m.name.removeprefix("Admin").startswith("List"):
            continue
        request = _fields(messages[m.descriptor.input_type])
        response = _fields(messages[m.descriptor.output_type])
        wanted = [
            ("page_size", request, _Field.TYPE_INT32),
            ("page_token", request, _Field.TYPE_STRING),
            ("next_page_token", response, _Field.TYPE_STRING),
        ]
        problems += [
            f"{m.full_name}: {name}"
            for name, fields, kind in wanted
            if name not in fields or fields[name].type != kind
        ]
    assert not problems, f"missing or mistyped pagination fields: {problems}"


def _has_request_id(message: _Message, messages: dict[str, _Message]) -> bool:
    """On the request itself, or on a message it carries (a stream's metadata message)."""
    fields = _fields(message)
    if "request_id" in fields and fields["request_id"].type == _Field.TYPE_STRING:
        return True
    return any(
        "request_id" in _fields(messages[f.type_name])
        for f in message.field
        if f.type == _Field.TYPE_MESSAGE and f.type_name in messages
    )


def _changes_state(method: ContractMethod) -> bool:
    route = http_route(method.descriptor)
    if route is not None:
        return route.primary.verb != "GET"
    return not method.name.startswith(_READ_PREFIXES)


def test_state_changing_rpcs_take_a_request_id(
    methods: list[ContractMethod], messages: dict[str, _Message]
) -> None:
    """AIP-155: retries carry the client's request_id so nothing happens twice."""
    missing = [
        m.full_name
        for m in methods
        if m.package not in _PREDATES_REQUEST_ID
        and _changes_state(m)
        and not _has_request_id(messages[m.descriptor.input_type], messages)
    ]
    assert not missing, f"state-changing RPCs without request_id: {missing}"
