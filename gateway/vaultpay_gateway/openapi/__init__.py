"""The OpenAPI 3.0 document of the JSON API, generated from the contract's descriptor set.

    document = build_openapi(Path("build/vaultpay.binpb"))
    Path("build/openapi.json").write_text(render_openapi(document))

or `python -m vaultpay_gateway.openapi --descriptor build/vaultpay.binpb --out build/openapi.json`.

Nothing is listed by hand, and no external generator runs: the document is derived from the
same descriptors the gateway routes and transcodes with (`contract`), so it describes exactly
what the gateway serves.

- One operation per `google.api.http` binding of every routed RPC (non-internal service, a
  rule that is not `internal`); `operationId` `Service_Method` (`Service_Method_2`, … for
  additional bindings), one tag per service. RPCs without a binding are gRPC only; their
  service's tag says so.
- Summary and description from the RPC's leading comment, plus its access rule in words
  (`Access: moderator+, strict.`) and as `x-vaultpay-access`; `x-vaultpay-rpc` names the RPC.
- Path parameters from the template, under their JSON names (`/v1/admin/users/{userId}`).
  Bindings without a body take the remaining request fields as query parameters (nested
  messages as dotted names; maps and repeated messages cannot be query parameters);
  `body: "*"` takes the request minus the path fields as the JSON body, `body: "field"` that
  field.
- Schemas follow the proto3 JSON mapping (`schemas`).
- Errors are `google.rpc.Status` (with `ErrorInfo`, `BadRequest` and `RetryInfo` details)
  for 400, 401, 403, 404, 409, 415, 429, 503 and any other status (`default`); public
  operations do not list 401 and 403, operations without a request body not 415 (a body sent
  to them anyway gets it too, like `default`).
- Security: `bearerAuth` (JWT) on every operation whose RPC is not `public: true`; public ones
  have an empty `security`.
- `servers` is `/`: the document works on whatever host and port serves it.

The output is deterministic (`render_openapi` sorts keys), so it can be diffed and cached.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2

from vaultpay_gateway._types import Json
from vaultpay_gateway.contract import (
    ApiContract,
    ContractError,
    HttpBinding,
    Rpc,
    Service,
    load_contract,
)
from vaultpay_gateway.openapi._descriptors import ProtoIndex, read_descriptor_set
from vaultpay_gateway.openapi.schemas import SchemaBuilder, is_scalar_json, schema_ref

__all__ = [
    "ACCESS_EXTENSION",
    "ERROR_DETAIL_TYPES",
    "OPENAPI_VERSION",
    "RPC_EXTENSION",
    "SECURITY_SCHEME",
    "build_openapi",
    "openapi_document",
    "render_openapi",
    "write_openapi",
]

OPENAPI_VERSION = "3.0.3"
SECURITY_SCHEME = "bearerAuth"
RPC_EXTENSION = "x-vaultpay-rpc"
ACCESS_EXTENSION = "x-vaultpay-access"
STATUS_TYPE = "google.rpc.Status"
ERROR_DETAIL_TYPES = ("google.rpc.ErrorInfo", "google.rpc.BadRequest", "google.rpc.RetryInfo")
_TYPE_URL_PREFIX = "type.googleapis.com/"
_ACCESS_RULE = "vaultpay.authz.v1.AccessRule"
_F = descriptor_pb2.FieldDescriptorProto
_VARIABLE = re.compile(r"\{([^{}=]+)(?:=([^{}]*))?\}")
# The end of the first sentence: a full stop before white space, not after "e.g" or "i.e".
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)\.(?=\s|$)")
_JSON = "application/json"


@dataclass(frozen=True, slots=True)
class _ErrorResponse:
    status: str
    name: str
    text: str
    secured_only: bool = False
    retry_after: bool = False
    body_only: bool = False


_ERROR_RESPONSES = (
    _ErrorResponse(
        "400",
        "BadRequest",
        "INVALID_ARGUMENT, FAILED_PRECONDITION or OUT_OF_RANGE: the request is invalid, or the "
        "system is not in a state to run it (e.g. reason `IDEMPOTENCY_KEY_REUSED`). Invalid "
        "fields are listed in a `google.rpc.BadRequest` detail. The gateway itself answers 400 "
        "with reason `INVALID_REQUEST` (malformed JSON, a value of the wrong type, an unknown "
        "query parameter) or "
        "`UNKNOWN_FIELD` (a body key the request message does not define).",
    ),
    _ErrorResponse(
        "401",
        "Unauthenticated",
        "UNAUTHENTICATED: the bearer token is missing, malformed, expired or revoked "
        "(the gateway's reason: `TOKEN_INVALID`).",
        secured_only=True,
    ),
    _ErrorResponse(
        "403",
        "PermissionDenied",
        "PERMISSION_DENIED: the caller's role is below the operation's minimum role, or the "
        "token was issued for another audience.",
        secured_only=True,
    ),
    _ErrorResponse(
        "404",
        "NotFound",
        "NOT_FOUND: the object does not exist, or belongs to someone else (both answer alike).",
    ),
    _ErrorResponse(
        "409",
        "Conflict",
        "ALREADY_EXISTS or ABORTED, e.g. reason `IDEMPOTENCY_KEY_IN_USE` while the first "
        "request with the same `requestId` is still running: retry later with the same id.",
    ),
    _ErrorResponse(
        "415",
        "UnsupportedMediaType",
        "INVALID_ARGUMENT, reason `UNSUPPORTED_MEDIA_TYPE`: the request body was not sent with "
        "`content-type: application/json` (parameters such as `; charset=utf-8` are fine; a "
        "charset must be UTF-8). The gateway refuses it before anything else reads the body.",
        body_only=True,
    ),
    _ErrorResponse(
        "429",
        "TooManyRequests",
        "RESOURCE_EXHAUSTED: a rate limit or throttle. A `google.rpc.RetryInfo` detail or the "
        "`retry-after` header tells how long to wait.",
        retry_after=True,
    ),
    _ErrorResponse(
        "503",
        "Unavailable",
        "UNAVAILABLE: a service is down or did not answer, or the outcome of a commit is "
        "unknown. Retry with the same `requestId`: state-changing requests are idempotent.",
    ),
    _ErrorResponse(
        "default",
        "Error",
        "Any other error as a `google.rpc.Status`, e.g. 500 INTERNAL (the message carries "
        "the request id, never internals) or 504 when a deadline passed.",
    ),
)


def _summary(text: str) -> str:
    """The first sentence of the first paragraph, on one line."""
    paragraph = " ".join(text.split("\n\n", 1)[0].split())
    end = _SENTENCE_END.search(paragraph)
    return paragraph[: end.end()] if end else paragraph


def _version(contract: ApiContract) -> str:
    versions = sorted({s.package.rsplit(".", 1)[-1] for s in contract.public_services})
    return ", ".join(versions)


class _Document:
    def __init__(self, contract: ApiContract, index: ProtoIndex) -> None:
        self._contract = contract
        self._index = index
        self._schemas = SchemaBuilder(index)
        services = [s for s in contract.public_services if any(r.is_routed for r in s.rpcs)]
        short = [s.full_name.rsplit(".", 1)[-1] for s in services]
        # Tags and operation ids use the service's short name unless two services share it.
        self._tags = {
            s.full_name: (name if short.count(name) == 1 else s.full_name)
            for s, name in zip(services, short, strict=True)
        }
        self._services = services

    # --- access rules ---

    def _roles(self) -> dict[int, str]:
        """Role numbers to value names (`ROLE_MODERATOR`), from `AccessRule.min_role`'s enum."""
        rule = self._index.messages.get(_ACCESS_RULE)
        field = next((f for f in rule.field if f.name == "min_role"), None) if rule else None
        if field is None or field.type != _F.TYPE_ENUM:
            return {}
        enum = self._index.enum(field.type_name.removeprefix("."))
        return {value.number: value.name for value in enum.value}

    def _role_names(self) -> dict[int, str]:
        """Role numbers to short names (`moderator`), without the unspecified value."""
        roles = self._roles()
        prefix = roles.get(0, "").removesuffix("UNSPECIFIED")
        return {n: name.removeprefix(prefix).lower() for n, name in roles.items() if n}

    def _access(self, rpc: Rpc) -> tuple[str, Json]:
        rule = rpc.rule
        assert rule is not None  # routed RPCs have a rule
        if rule.public:
            return "Access: public (no token needed).", {"public": True}
        role = self._role_names().get(rule.min_role)
        text = f"Access: {role}+" if role else "Access: any valid access token"
        if rule.strict:
            text += ", strict"
        extension: Json = {"public": False, "strict": rule.strict}
        value = self._roles().get(rule.min_role)
        if value is not None:
            extension["minRole"] = value
        return text + ".", extension

    # --- operations ---

    def _field_path(
        self, message: str, proto_path: str
    ) -> list[tuple[str, descriptor_pb2.FieldDescriptorProto]]:
        """The fields along a dotted proto path, each with the message that owns it."""
        found: list[tuple[str, descriptor_pb2.FieldDescriptorProto]] = []
        owner = message
        for i, name in enumerate(proto_path.split(".")):
            if i:
                previous = found[-1][1]
                if previous.type != _F.TYPE_MESSAGE:
                    raise ContractError(f"{message}: {proto_path} goes through a scalar")
                owner = previous.type_name.removeprefix(".")
            field = next((f for f in self._index.message(owner).field if f.name == name), None)
            if field is None:
                raise ContractError(f"{message} has no field {proto_path}")
            found.append((owner, field))
        return found

    def _path(self, request: str, binding: HttpBinding) -> tuple[str, list[Json], set[str]]:
        """The OpenAPI path, its parameters and the proto paths of the fields it binds."""
        parameters: list[Json] = []
        bound: set[str] = set()

        def variable(match: re.Match[str]) -> str:
            proto_path, pattern = match.group(1).strip(), match.group(2)
            fields = self._field_path(request, proto_path)
            owner, field = fields[-1]
            if field.label == _F.LABEL_REPEATED or not is_scalar_json(field):
                raise ContractError(f"{binding.template}: {proto_path} is not a single value")
            name = ".".join(f.json_name or f.name for _, f in fields)
            description = self._schemas.field_comment(owner, field)
            if pattern is not None and pattern.strip() != "*":
                description += f"\n\nMatches `{pattern.strip()}` (may contain `/`)."
            if proto_path not in bound:
                bound.add(proto_path)
                parameter: Json = {
                    "name": name,
                    "in": "path",
                    "required": True,
                    "schema": self._schemas.element_schema(field),
                }
                if description.strip():
                    parameter["description"] = description.strip()
                parameters.append(parameter)
            return "{" + name + "}"

        return _VARIABLE.sub(variable, binding.template), parameters, bound

    def _query(
        self,
        message: str,
        bound: set[str],
        prefix: tuple[str, str] = ("", ""),
        seen: tuple[str, ...] = (),
    ) -> list[Json]:
        """Query parameters for the request fields neither the path nor the body takes."""
        parameters: list[Json] = []
        for field in self._index.message(message).field:
            proto_path = prefix[0] + field.name
            json_path = prefix[1] + (field.json_name or field.name)
            if proto_path in bound or self._schemas.map_entry(field) is not None:
                continue
            if is_scalar_json(field):
                parameter: Json = {
                    "name": json_path,
                    "in": "query",
                    "schema": self._schemas.value_schema(field),
                }
                if field.label == _F.LABEL_REPEATED:
                    parameter.update(style="form", explode=True)
                description = self._schemas.field_comment(message, field)
                if description:
                    parameter["description"] = description
                parameters.append(parameter)
            elif field.type == _F.TYPE_MESSAGE and field.label != _F.LABEL_REPEATED:
                nested = field.type_name.removeprefix(".")
                if nested not in seen:
                    parameters.extend(
                        self._query(
                            nested,
                            bound,
                            (proto_path + ".", json_path + "."),
                            (*seen, message),
                        )
                    )
        return parameters

    def _request_body(self, request: str, binding: HttpBinding, bound: set[str]) -> Json:
        if binding.body == "*":
            top = {path for path in bound if "." not in path}
            schema = (
                self._schemas.message_schema(request, omit=top)
                if top
                else self._schemas.type_schema(request)
            )
        else:
            field = self._field_path(request, binding.body)[-1][1]
            schema = self._schemas.field_schema(request, field)
        return {"required": True, "content": {_JSON: {"schema": schema}}}

    def _responses(self, rpc: Rpc, output: str, *, has_body: bool) -> Json:
        success: Json = {
            "description": _summary(self._index.comment("message", output)) or "OK",
            "headers": {"x-request-id": {"$ref": "#/components/headers/RequestId"}},
            "content": {_JSON: {"schema": self._schemas.type_schema(output)}},
        }
        if rpc.server_streaming:
            name = output.rsplit(".", 1)[-1]
            success["description"] = (
                f"A stream of `{name}` messages: one JSON object per line (newline-delimited "
                "JSON), sent as they happen."
            )
        public = rpc.rule is not None and rpc.rule.public
        responses: Json = {"200": success}
        for error in _ERROR_RESPONSES:
            if (error.secured_only and public) or (error.body_only and not has_body):
                continue
            responses[error.status] = {"$ref": f"#/components/responses/{error.name}"}
        return responses

    def _operation(
        self, service: Service, rpc: Rpc, binding: HttpBinding, ordinal: int
    ) -> tuple[str, Json]:
        method = self._index.method(service.full_name, rpc.name)
        request = method.input_type.removeprefix(".")
        output = method.output_type.removeprefix(".")
        path, parameters, bound = self._path(request, binding)
        if binding.body and binding.body != "*":
            bound.add(binding.body)
        if binding.body != "*":
            parameters.extend(self._query(request, bound))

        tag = self._tags[service.full_name]
        comment = self._index.comment("method", service.full_name, rpc.name)
        access_text, access = self._access(rpc)
        parts = [comment, access_text]
        if rpc.server_streaming:
            parts.append(
                "Server streaming: the reply is newline-delimited JSON, one object per message. "
                "Over HTTP/1.1 an error after the first message only shows in the trailers."
            )
        parts.append(f"gRPC: `{rpc.grpc_path}`.")
        operation_id = f"{tag.replace('.', '_')}_{rpc.name}"
        if ordinal > 1:
            operation_id += f"_{ordinal}"
        operation: Json = {
            "operationId": operation_id,
            "tags": [tag],
            "summary": _summary(comment) or rpc.name,
            "description": "\n\n".join(part for part in parts if part),
            "responses": self._responses(rpc, output, has_body=bool(binding.body)),
            "security": [] if access["public"] else [{SECURITY_SCHEME: []}],
            RPC_EXTENSION: rpc.full_name,
            ACCESS_EXTENSION: access,
        }
        if parameters:
            operation["parameters"] = parameters
        if binding.body:
            operation["requestBody"] = self._request_body(request, binding, bound)
        return path, operation

    def _paths(self) -> Json:
        paths: dict[str, Json] = {}
        shapes: dict[str, str] = {}
        operation_ids: set[str] = set()
        for service in self._services:
            for rpc in service.rpcs:
                if not rpc.is_routed:
                    continue
                for ordinal, binding in enumerate(rpc.http, start=1):
                    path, operation = self._operation(service, rpc, binding, ordinal)
                    verb = binding.method.lower()
                    if verb not in {"get", "put", "post", "delete", "patch", "head", "options"}:
                        raise ContractError(f"{rpc.full_name}: no OpenAPI verb for {verb!r}")
                    # Templates that differ only in variable names are one path to OpenAPI.
                    shape = _VARIABLE.sub("{}", path)
                    if shapes.setdefault(shape, path) != path:
                        raise ContractError(f"{path} and {shapes[shape]} are the same path")
                    if verb in paths.setdefault(path, {}):
                        other = paths[path][verb][RPC_EXTENSION]
                        raise ContractError(f"{binding.method} {path}: {rpc.full_name}, {other}")
                    if operation["operationId"] in operation_ids:
                        raise ContractError(f"operationId {operation['operationId']} twice")
                    operation_ids.add(operation["operationId"])
                    paths[path][verb] = operation
        return paths

    # --- the whole document ---

    def _tag(self, service: Service) -> Json:
        parts = [
            self._index.comment("service", service.full_name),
            f"gRPC service `{service.full_name}`.",
        ]
        grpc_only = [r.name for r in service.rpcs if r.is_routed and not r.http]
        if grpc_only:
            listed = ", ".join(f"`{name}`" for name in grpc_only)
            parts.append(f"Only over gRPC (no HTTP binding): {listed}.")
        return {"name": self._tags[service.full_name], "description": "\n\n".join(parts)}

    def _error_components(self) -> tuple[Json, Json]:
        """The `google.rpc.Status` schema with its known details, and the error responses."""
        if STATUS_TYPE not in self._index.messages:
            raise ContractError(
                f"{STATUS_TYPE} is not in the descriptor set (build it with google/rpc/*.proto)"
            )
        self._schemas.type_schema(STATUS_TYPE)
        details: list[Json] = []
        for name in ERROR_DETAIL_TYPES:
            # These messages only ever appear packed in an Any: their JSON has an "@type".
            details.append(self._schemas.type_schema(name))
            detail = self._schemas.components[name]
            detail.setdefault("properties", {})["@type"] = {
                "type": "string",
                "enum": [_TYPE_URL_PREFIX + name],
            }
            detail["required"] = ["@type"]
        status = self._schemas.components[STATUS_TYPE]
        field = status["properties"]["details"]
        any_detail = field["items"]
        field["items"] = {"anyOf": [*details, any_detail]}
        field["description"] = (
            f"{field.get('description', '')}\n\nThe gateway and the services send `ErrorInfo` "
            "(always: a stable `reason` and a `domain`), `BadRequest` (invalid fields) and "
            "`RetryInfo` (when waiting helps). Skip detail types you do not know."
        ).strip()
        responses: Json = {}
        for error in _ERROR_RESPONSES:
            response: Json = {
                "description": error.text,
                "headers": {"x-request-id": {"$ref": "#/components/headers/RequestId"}},
                "content": {_JSON: {"schema": schema_ref(STATUS_TYPE)}},
            }
            if error.retry_after:
                response["headers"]["retry-after"] = {"$ref": "#/components/headers/RetryAfter"}
            responses[error.name] = response
        return status, responses

    def _description(self) -> str:
        roles = " < ".join(f"`{name}`" for _, name in sorted(self._role_names().items()))
        return "\n".join(
            [
                "The JSON API of VaultPay's gateway, which transcodes it to the services' gRPC "
                "API. Generated from the protobuf contract: each operation is one RPC "
                "(`operationId` `Service_Method`, gRPC path in the description).",
                "",
                "- **Tokens**: send the access token from the Login operation as "
                "`Authorization: Bearer <token>`. Operations without a lock need none. Each "
                "description states the lowest role allowed"
                + (f" ({roles})" if roles else "")
                + " and whether the call is *strict*: then the token is also checked with "
                "the auth service on every call (not revoked, user active, role current).",
                "- **JSON**: proto3 JSON mapping. Field names are lowerCamelCase; 64-bit "
                "integers are strings; enums are value names; timestamps are RFC 3339 strings; "
                "bytes are base64. Money is integer minor units with a currency code, never a "
                "float.",
                "- **Strict input**: body keys the request message does not define are refused "
                "(400, reason `UNKNOWN_FIELD`), and so are unknown query parameters (400, "
                "`INVALID_REQUEST`).",
                "- **Idempotency**: state-changing requests carry a client-generated `requestId` "
                "(UUID). The same request with the same id replays the first answer; a "
                "different request with a used id is refused (`IDEMPOTENCY_KEY_REUSED`).",
                "- **Errors**: a `google.rpc.Status` JSON body with an `ErrorInfo` detail "
                "(stable `reason`, `domain`). Every response carries `x-request-id`.",
            ]
        )

    def build(self) -> Json:
        paths = self._paths()
        status, error_responses = self._error_components()
        self._schemas.components[STATUS_TYPE] = status
        return {
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": "VaultPay API",
                "version": _version(self._contract),
                "description": self._description(),
            },
            "servers": [{"url": "/", "description": "The gateway that serves this document."}],
            "tags": [self._tag(s) for s in self._services],
            "paths": paths,
            "components": {
                "schemas": self._schemas.components,
                "responses": error_responses,
                "headers": {
                    "RequestId": {
                        "description": "The gateway's id for this request, as in its access "
                        "log: quote it when reporting a problem.",
                        "schema": {"type": "string"},
                    },
                    "RetryAfter": {
                        "description": "Seconds to wait before trying again.",
                        "schema": {"type": "integer"},
                    },
                },
                "securitySchemes": {
                    SECURITY_SCHEME: {
                        "type": "http",
                        "scheme": "bearer",
                        "bearerFormat": "JWT",
                        "description": "A 15-minute access token from the Login or "
                        "RefreshToken operation.",
                    }
                },
            },
        }


def openapi_document(
    contract: ApiContract, files: Sequence[descriptor_pb2.FileDescriptorProto]
) -> Json:
    """The document for `contract`, whose descriptor set holds `files`."""
    return _Document(contract, ProtoIndex.of(files)).build()


def build_openapi(descriptor_set: Path) -> Json:
    """The OpenAPI document of the routed RPCs of a descriptor set (`make descriptor`)."""
    files = read_descriptor_set(descriptor_set).file
    return openapi_document(load_contract(descriptor_set), files)


def render_openapi(document: Json) -> str:
    """Deterministic JSON text: sorted keys, two-space indent, a final newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_openapi(descriptor_set: Path, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_openapi(build_openapi(descriptor_set)), encoding="utf-8")
    return out
