"""The generated OpenAPI document, checked as data against the contract it comes from.

No OpenAPI library is needed: the checks are structural (every routed RPC and binding is
there once, every `$ref` resolves, every path parameter is declared, security follows the
access rules, proto3 JSON types), and the expectations come from the descriptors and the
generated `_pb2` modules, not from the generator's own helpers.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import any_pb2, descriptor_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from vaultpay.authz.v1 import authz_pb2
from vaultpay.type.v1 import role_pb2
from vaultpay_gateway import ContractError, load_contract
from vaultpay_gateway.openapi import build_openapi, render_openapi
from vaultpay_gateway.openapi.__main__ import main

_F = descriptor_pb2.FieldDescriptorProto
_VARIABLE = re.compile(r"\{([^{}=]+)(?:=[^{}]*)?\}")
_VERBS = {"get", "put", "post", "delete", "patch"}
_ERRORS = ("400", "404", "409", "429", "503", "default")
_SECURED_ERRORS = ("401", "403")


@pytest.fixture(scope="module")
def document(descriptor_set: Path) -> dict[str, Any]:
    return build_openapi(descriptor_set)


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for verb, operation in item.items():
            assert verb in _VERBS, f"{path}: unexpected key {verb}"
            yield path, verb, operation


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _schema(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follows a `$ref` or a one-element `anyOf` wrapper to the schema it names."""
    if "anyOf" in schema and len(schema["anyOf"]) == 1:
        schema = schema["anyOf"][0]
    if "$ref" in schema:
        resolved: dict[str, Any] = _resolve(document, schema["$ref"])
        return resolved
    return schema


# --- coverage of the contract ---


def test_every_routed_rpc_has_one_operation_per_binding(
    document: dict[str, Any], descriptor_set: Path
) -> None:
    contract = load_contract(descriptor_set)
    expected = Counter(
        (rpc.full_name, binding.method, _VARIABLE.sub("{}", binding.template))
        for rpc in contract.routed_rpcs()
        for binding in rpc.http
    )
    found = Counter(
        (operation["x-vaultpay-rpc"], verb.upper(), _VARIABLE.sub("{}", path))
        for path, verb, operation in _operations(document)
    )

    assert found == expected
    assert all(count == 1 for count in found.values())
    routed = {rpc.full_name for rpc in contract.routed_rpcs()}
    unrouted = {rpc.full_name for service in contract.services for rpc in service.rpcs} - routed
    assert "vaultpay.auth.v1.AuthInternalService.IntrospectToken" in unrouted
    assert not unrouted & {rpc for rpc, _, _ in found}


def test_operation_ids_are_service_method_and_unique(document: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in _operations(document)]

    assert len(ids) == len(set(ids))
    for _, _, operation in _operations(document):
        service, method = operation["x-vaultpay-rpc"].rsplit(".", 2)[-2:]
        assert operation["operationId"] == f"{service}_{method}"
        assert operation["tags"] == [service]
    tags = [tag["name"] for tag in document["tags"]]
    used = {tag for _, _, operation in _operations(document) for tag in operation["tags"]}
    assert used <= set(tags)
    assert len(tags) == len(set(tags))


def test_summaries_and_descriptions_come_from_the_proto_comments(
    document: dict[str, Any],
) -> None:
    register = document["paths"]["/v1/auth/register"]["post"]
    assert register["summary"] == "Creates a user with the role ROLE_USER."
    assert "password policy" in register["description"]
    assert "`/vaultpay.auth.v1.AuthService/Register`" in register["description"]
    for path, verb, operation in _operations(document):
        assert operation["summary"], f"{verb} {path}"
        assert "\n" not in operation["summary"]
    wallet = next(tag for tag in document["tags"] if tag["name"] == "WalletService")
    assert "wallet holder" in wallet["description"]
    kyc = next(tag for tag in document["tags"] if tag["name"] == "KycService")
    assert "`UploadKycDocument`" in kyc["description"], "gRPC-only RPCs are named"


# --- references and parameters ---


def test_every_ref_resolves(document: dict[str, Any]) -> None:
    refs = set(_refs(document))

    assert "#/components/schemas/vaultpay.type.v1.Money" in refs
    for ref in refs:
        assert isinstance(_resolve(document, ref), dict), ref
    # And nothing in components is left unused.
    for kind in ("schemas", "responses", "headers"):
        for name in document["components"][kind]:
            assert f"#/components/{kind}/{name}" in refs, f"{kind}/{name} is never used"


def test_every_path_parameter_is_declared(document: dict[str, Any]) -> None:
    for path, verb, operation in _operations(document):
        in_path = re.findall(r"\{([^{}]+)\}", path)
        declared = [p for p in operation.get("parameters", []) if p["in"] == "path"]
        assert sorted(in_path) == sorted(p["name"] for p in declared), f"{verb} {path}"
        assert all(p["required"] is True for p in declared)
        names = [(p["in"], p["name"]) for p in operation.get("parameters", [])]
        assert len(names) == len(set(names)), f"{verb} {path}: a parameter twice"


def test_paths_use_json_names_and_templates_keep_their_shape(document: dict[str, Any]) -> None:
    set_role = document["paths"]["/v1/admin/users/{userId}:setRole"]["post"]

    (user_id,) = set_role["parameters"]
    assert user_id["schema"] == {"type": "string"}
    body = set_role["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"role", "reason"}, "path fields stay out of the body"


def test_query_parameters_are_the_remaining_fields_of_bodyless_bindings(
    document: dict[str, Any],
) -> None:
    list_users = document["paths"]["/v1/admin/users"]["get"]
    names = [p["name"] for p in list_users["parameters"]]
    assert names == ["pageSize", "pageToken", "role", "active", "emailPrefix"]
    assert all(p["in"] == "query" and not p.get("required") for p in list_users["parameters"])
    audit = document["paths"]["/v1/admin/auth-audit-logs"]["get"]["parameters"]
    start = next(p for p in audit if p["name"] == "startTime")
    assert start["schema"] == {"type": "string", "format": "date-time"}

    for path, verb, operation in _operations(document):
        query = [p for p in operation.get("parameters", []) if p["in"] == "query"]
        if verb in {"get", "delete"}:
            assert "requestBody" not in operation, f"{verb} {path}"
        else:
            assert operation["requestBody"]["required"] is True, f"{verb} {path}"
            assert not query, f"{verb} {path}: body '*' leaves nothing for the query"
        for parameter in query:
            assert re.fullmatch(r"[a-z][A-Za-z0-9]*(\.[a-z][A-Za-z0-9]*)*", parameter["name"])


# --- access rules ---


def test_security_follows_the_access_rules(document: dict[str, Any], descriptor_set: Path) -> None:
    contract = load_contract(descriptor_set)
    rules = {rpc.full_name: rpc.rule for rpc in contract.routed_rpcs()}
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    public_seen = 0

    for path, verb, operation in _operations(document):
        rule = rules[operation["x-vaultpay-rpc"]]
        assert rule is not None
        where = f"{verb} {path}"
        if rule.public:
            public_seen += 1
            assert operation["security"] == [], where
            assert "Access: public" in operation["description"], where
            assert not set(_SECURED_ERRORS) & set(operation["responses"]), where
            continue
        assert operation["security"] == [{"bearerAuth": []}], where
        role = role_pb2.Role.Name(role_pb2.Role.ValueType(rule.min_role))
        access = f"Access: {role.removeprefix('ROLE_').lower()}+"
        access += ", strict." if rule.strict else "."
        assert access in operation["description"], where
        assert operation["x-vaultpay-access"] == {
            "public": False,
            "minRole": role,
            "strict": rule.strict,
        }
        assert set(_SECURED_ERRORS) <= set(operation["responses"]), where
    assert public_seen >= 5  # Register, Login, RefreshToken, GetJwks, ResetPin, ConfirmIp

    moderated = document["paths"]["/v1/admin/kyc/{submissionId}:approve"]["post"]
    assert "Access: moderator+, strict." in moderated["description"]


def test_errors_are_google_rpc_status_with_details(document: dict[str, Any]) -> None:
    for path, verb, operation in _operations(document):
        assert set(_ERRORS) <= set(operation["responses"]), f"{verb} {path}"
        # 415 (a body not sent as application/json) where the operation takes a body.
        assert ("415" in operation["responses"]) == ("requestBody" in operation), f"{verb} {path}"
        for status in (*_ERRORS, *_SECURED_ERRORS, "415"):
            if status in operation["responses"]:
                response = _resolve(document, operation["responses"][status]["$ref"])
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/google.rpc.Status"}
    schemas = document["components"]["schemas"]
    status = schemas["google.rpc.Status"]
    assert set(status["properties"]) == {"code", "message", "details"}
    details = status["properties"]["details"]["items"]["anyOf"]
    for detail in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest):
        name = detail.DESCRIPTOR.full_name
        assert {"$ref": f"#/components/schemas/{name}"} in details
        type_url = schemas[name]["properties"]["@type"]
        assert type_url["enum"] == [f"type.googleapis.com/{name}"]
    assert set(schemas["google.rpc.ErrorInfo"]["properties"]) >= {"reason", "domain", "metadata"}
    assert "retry-after" in document["components"]["responses"]["TooManyRequests"]["headers"]


# --- proto3 JSON mapping ---


def _descriptor_messages(
    descriptor_set: Path,
) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file

    def walk(scope: str, messages: Any) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
        for message in messages:
            name = f"{scope}.{message.name}"
            yield name, message
            yield from walk(name, message.nested_type)

    for file in files:
        yield from walk(file.package, file.message_type)


def test_field_types_follow_the_proto3_json_mapping(
    document: dict[str, Any], descriptor_set: Path
) -> None:
    schemas = document["components"]["schemas"]
    checked = Counter[str]()
    for name, message in _descriptor_messages(descriptor_set):
        if name not in schemas:
            continue
        properties = schemas[name].get("properties", {})
        for field in message.field:
            prop = properties[field.json_name]
            repeated = field.label == _F.LABEL_REPEATED
            value = prop["items"] if repeated and prop.get("type") == "array" else prop
            if field.type in (_F.TYPE_INT64, _F.TYPE_UINT64, _F.TYPE_SINT64, _F.TYPE_FIXED64):
                assert value["type"] == "string", f"{name}.{field.name}"
                assert re.fullmatch(value["pattern"], "125050")
                checked["int64"] += 1
            elif field.type == _F.TYPE_ENUM:
                enum = _schema(document, value)
                assert enum["type"] == "string", f"{name}.{field.name}"
                assert all(isinstance(v, str) for v in enum["enum"])
                checked["enum"] += 1
            elif field.type == _F.TYPE_BYTES:
                assert value == {**value, "type": "string", "format": "byte"}
                checked["bytes"] += 1
            elif field.type_name == ".google.protobuf.Timestamp":
                assert value == {**value, "type": "string", "format": "date-time"}
                checked["timestamp"] += 1
            elif field.type_name == ".google.protobuf.Duration":
                assert value == {**value, "type": "string"}
                assert re.fullmatch(value["pattern"], "1.5s")
                checked["duration"] += 1
            elif field.type == _F.TYPE_MESSAGE and repeated and prop.get("type") == "object":
                assert "additionalProperties" in prop, f"{name}.{field.name} is a map"
                checked["map"] += 1
            elif field.type == _F.TYPE_MESSAGE:
                # google.rpc.Status.details lists the detail types it may hold.
                for option in value.get("anyOf", [value]):
                    assert _schema(document, option)["type"] == "object", f"{name}.{field.name}"
                checked["message"] += 1
            if repeated and prop.get("type") == "array":
                checked["repeated"] += 1
    kinds = {"int64", "enum", "bytes", "timestamp", "duration", "map", "message", "repeated"}
    assert set(checked) == kinds, checked
    role = schemas["vaultpay.type.v1.Role"]
    assert role["enum"] == list(role_pb2.Role.keys())
    assert "`ROLE_MODERATOR`: Support staff" in role["description"]
    money = schemas["vaultpay.type.v1.Money"]["properties"]
    assert money["amountMinor"]["type"] == "string"
    assert "amount_minor" not in money


# --- output ---


def test_output_is_deterministic_and_relative(
    document: dict[str, Any], descriptor_set: Path
) -> None:
    text = render_openapi(document)

    assert text == render_openapi(build_openapi(descriptor_set))
    assert json.loads(text) == document
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert document["openapi"].startswith("3.0.")
    assert document["servers"][0]["url"] == "/"
    assert "http://" not in json.dumps(document["servers"])


def test_cli_writes_the_document(
    descriptor_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "build" / "openapi.json"

    assert main(["--descriptor", str(descriptor_set), "--out", str(out)]) == 0
    assert out.read_text() == render_openapi(build_openapi(descriptor_set))
    assert str(out) in capsys.readouterr().out
    assert main(["--descriptor", str(tmp_path / "nope"), "--out", str(out)]) == 1


# --- derivation rules the real contract does not exercise ---


def _file_proto(module: Any) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(proto)
    return proto


def _demo_method(
    name: str, http: http_pb2.HttpRule, rule: dict[str, Any]
) -> descriptor_pb2.MethodDescriptorProto:
    method = descriptor_pb2.MethodDescriptorProto(
        name=name, input_type=".vaultpay.demo.v1.Req", output_type=".vaultpay.demo.v1.Res"
    )
    method.options.Extensions[annotations_pb2.http].CopyFrom(http)
    method.options.Extensions[authz_pb2.rule].CopyFrom(authz_pb2.AccessRule(**rule))
    return method


def _demo_set(tmp_path: Path, *methods: descriptor_pb2.MethodDescriptorProto) -> Path:
    demo = descriptor_pb2.FileDescriptorProto(name="vaultpay/demo/v1/demo.proto")
    demo.package = "vaultpay.demo.v1"
    demo.syntax = "proto3"
    inner = demo.message_type.add(name="Inner")
    inner.field.add(name="page_no", json_name="pageNo", number=1, type=_F.TYPE_UINT32)
    req = demo.message_type.add(name="Req")
    entry = req.nested_type.add(name="TagsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", json_name="key", number=1, type=_F.TYPE_STRING)
    entry.field.add(name="value", json_name="value", number=2, type=_F.TYPE_STRING)
    fields: list[tuple[str, str, int, str, int]] = [
        ("shelf_id", "shelfId", _F.TYPE_STRING, "", _F.LABEL_OPTIONAL),
        ("inner", "inner", _F.TYPE_MESSAGE, ".vaultpay.demo.v1.Inner", _F.LABEL_OPTIONAL),
        ("ids", "ids", _F.TYPE_FIXED64, "", _F.LABEL_REPEATED),
        ("tags", "tags", _F.TYPE_MESSAGE, ".vaultpay.demo.v1.Req.TagsEntry", _F.LABEL_REPEATED),
    ]
    for number, (name, json_name, kind, type_name, label) in enumerate(fields, start=1):
        req.field.add(
            name=name,
            json_name=json_name,
            number=number,
            type=kind,
            type_name=type_name,
            label=label,
        )
    demo.message_type.add(name="Res")
    demo.service.add(name="DemoService", method=list(methods))
    files = [
        _file_proto(module) for module in (any_pb2, status_pb2, duration_pb2, error_details_pb2)
    ]
    path = tmp_path / "demo.binpb"
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=[*files, demo]).SerializeToString())
    return path


def test_additional_bindings_nested_query_parameters_and_body_fields(tmp_path: Path) -> None:
    path = _demo_set(
        tmp_path,
        _demo_method(
            "Get",
            http_pb2.HttpRule(
                get="/v1/shelves/{shelf_id=shelves/*}",
                additional_bindings=[http_pb2.HttpRule(post="/v1/shelves:get", body="inner")],
            ),
            {"public": True},
        ),
    )

    paths = build_openapi(path)["paths"]

    get = paths["/v1/shelves/{shelfId}"]["get"]
    assert get["operationId"] == "DemoService_Get"
    shelf, *query = get["parameters"]
    assert shelf["in"] == "path" and "`shelves/*`" in shelf.get("description", "")
    # Nested messages become dotted names; maps cannot be query parameters; repeated
    # scalars are exploded arrays of (64-bit: string) values.
    assert [p["name"] for p in query] == ["inner.pageNo", "ids"]
    assert query[1]["schema"]["items"]["type"] == "string" and query[1]["explode"] is True
    post = paths["/v1/shelves:get"]["post"]
    assert post["operationId"] == "DemoService_Get_2"
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/vaultpay.demo.v1.Inner"
    }
    assert [p["name"] for p in post["parameters"]] == ["shelfId", "ids"]


def test_two_rpcs_on_one_route_are_a_contract_error(tmp_path: Path) -> None:
    path = _demo_set(
        tmp_path,
        _demo_method("A", http_pb2.HttpRule(get="/v1/shelves/{shelf_id}"), {"min_role": 1}),
        _demo_method("B", http_pb2.HttpRule(get="/v1/shelves/{shelf_id}"), {"min_role": 1}),
    )

    with pytest.raises(ContractError, match="DemoService"):
        build_openapi(path)
