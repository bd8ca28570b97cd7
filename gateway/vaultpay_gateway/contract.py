"""What the gateway needs to know about the API, read from the descriptor set.

Nothing here lists RPCs by hand: services, their access rules (`vaultpay.authz.v1.rule`),
HTTP bindings (`google.api.http`) and streaming shape all come from the FileDescriptorSet that
`make descriptor` builds, so new services and RPCs are routed as soon as their protos land.

    contract = load_contract(Path("build/vaultpay.binpb"))
    for rpc in contract.routed_rpcs():
        print(rpc.grpc_path, rpc.rule.public)

The message types (every file of the set, `google.*` included) are kept too, in the shape the
JSON body check needs (`body_schema`): field names, JSON names, message-typed fields, maps.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

from vaultpay.authz.v1 import authz_pb2

__all__ = [
    "API_PACKAGE_PREFIX",
    "AccessRule",
    "ApiContract",
    "ContractError",
    "EnumValue",
    "HttpBinding",
    "Message",
    "MessageField",
    "Rpc",
    "Service",
    "load_contract",
]

API_PACKAGE_PREFIX = "vaultpay."
_INTERNAL_SUFFIX = "InternalService"
_HTTP_VERBS = ("get", "put", "post", "delete", "patch")


class ContractError(ValueError):
    """The descriptor set cannot be turned into a gateway config."""


@dataclass(frozen=True, slots=True)
class AccessRule:
    """The `vaultpay.authz.v1.rule` option of an RPC (only what the edge acts on)."""

    public: bool
    internal: bool
    min_role: int
    strict: bool


@dataclass(frozen=True, slots=True)
class HttpBinding:
    """One `google.api.http` binding: an HTTP method, a path template and its `body`.

    `body` is the rule's `body` as written: `"*"`, a field name of the request, or `""`.
    """

    method: str
    template: str
    body: str = ""


@dataclass(frozen=True, slots=True)
class MessageField:
    """One field of a message, as far as its JSON form is concerned.

    `message_type` is the full name (no leading dot) of a message-typed field, map fields
    included (their type is the synthetic `…Entry` message), else None.
    """

    name: str
    json_name: str
    message_type: str | None
    repeated: bool


@dataclass(frozen=True, slots=True)
class EnumValue:
    """One value of an enum: the name a JSON client sends and its number."""

    name: str
    number: int


@dataclass(frozen=True, slots=True)
class Message:
    full_name: str
    fields: tuple[MessageField, ...]
    map_entry: bool = False

    def field(self, name: str) -> MessageField | None:
        """The field with this proto name."""
        return next((f for f in self.fields if f.name == name), None)


@dataclass(frozen=True, slots=True)
class Rpc:
    service: str
    name: str
    rule: AccessRule | None
    http: tuple[HttpBinding, ...]
    client_streaming: bool
    server_streaming: bool
    input_type: str = ""

    @property
    def full_name(self) -> str:
        return f"{self.service}.{self.name}"

    @property
    def grpc_path(self) -> str:
        return f"/{self.service}/{self.name}"

    @property
    def is_streaming(self) -> bool:
        return self.client_streaming or self.server_streaming

    @property
    def is_routed(self) -> bool:
        """Reachable through the gateway: it has a rule and the rule is not `internal`.

        An RPC without a rule is denied by the services (deny by default), so the edge does
        not route it either.
        """
        return self.rule is not None and not self.rule.internal


@dataclass(frozen=True, slots=True)
class Service:
    full_name: str
    package: str
    rpcs: tuple[Rpc, ...]

    @property
    def upstream(self) -> str:
        """The upstream (cluster) name: `vaultpay.<upstream>.v1` -> `<upstream>`."""
        return self.package.split(".")[1]

    @property
    def is_internal(self) -> bool:
        """Mesh-only: named `…InternalService`, or every RPC is marked `internal`."""
        if self.full_name.endswith(_INTERNAL_SUFFIX):
            return True
        return bool(self.rpcs) and all(r.rule is not None and r.rule.internal for r in self.rpcs)


def _no_messages() -> Mapping[str, Message]:
    return MappingProxyType({})


def _no_enums() -> Mapping[str, tuple[EnumValue, ...]]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ApiContract:
    services: tuple[Service, ...]
    # Every message of the descriptor set by full name (no leading dot).
    messages: Mapping[str, Message] = field(default_factory=_no_messages, compare=False)
    # Every enum of the descriptor set by full name, its values in declaration order.
    enums: Mapping[str, tuple[EnumValue, ...]] = field(default_factory=_no_enums, compare=False)

    @property
    def public_services(self) -> tuple[Service, ...]:
        """Services the transcoder and the router expose (everything not internal)."""
        return tuple(s for s in self.services if not s.is_internal)

    @property
    def upstreams(self) -> tuple[str, ...]:
        return tuple(sorted({s.upstream for s in self.services}))

    def routed_rpcs(self) -> tuple[Rpc, ...]:
        return tuple(r for s in self.public_services for r in s.rpcs if r.is_routed)

    def service_of(self, rpc: Rpc) -> Service:
        return next(s for s in self.services if s.full_name == rpc.service)

    def find_rpc(self, full_name: str) -> Rpc:
        """Looks an RPC up by `package.Service.Method`."""
        for service in self.services:
            for rpc in service.rpcs:
                if rpc.full_name == full_name:
                    return rpc
        raise ContractError(f"RPC {full_name} is not in the descriptor set")

    def message(self, full_name: str) -> Message:
        try:
            return self.messages[full_name]
        except KeyError:
            raise ContractError(f"message {full_name} is not in the descriptor set") from None


def _access_rule(options: descriptor_pb2.MethodOptions) -> AccessRule | None:
    if not options.HasExtension(authz_pb2.rule):
        return None
    rule = options.Extensions[authz_pb2.rule]
    return AccessRule(
        public=rule.public, internal=rule.internal, min_role=int(rule.min_role), strict=rule.strict
    )


def _bindings(rule: http_pb2.HttpRule) -> tuple[HttpBinding, ...]:
    pattern = rule.WhichOneof("pattern")
    found: list[HttpBinding] = []
    if pattern in _HTTP_VERBS:
        found.append(HttpBinding(pattern.upper(), getattr(rule, pattern), rule.body))
    elif pattern == "custom":
        found.append(HttpBinding(rule.custom.kind.upper(), rule.custom.path, rule.body))
    for extra in rule.additional_bindings:
        found.extend(_bindings(extra))
    return tuple(found)


def _rpc(service: str, method: descriptor_pb2.MethodDescriptorProto) -> Rpc:
    options = method.options
    http = (
        options.Extensions[annotations_pb2.http]
        if options.HasExtension(annotations_pb2.http)
        else None
    )
    return Rpc(
        service=service,
        name=method.name,
        rule=_access_rule(options),
        http=_bindings(http) if http is not None else (),
        client_streaming=method.client_streaming,
        server_streaming=method.server_streaming,
        input_type=method.input_type.removeprefix("."),
    )


def _lower_camel(name: str) -> str:
    """protoc's default json_name: `full_name` -> `fullName` (used when json_name is unset)."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _messages(scope: str, types: Iterable[descriptor_pb2.DescriptorProto]) -> Iterator[Message]:
    for message in types:
        full_name = f"{scope}.{message.name}" if scope else message.name
        yield Message(
            full_name=full_name,
            fields=tuple(
                MessageField(
                    name=f.name,
                    json_name=f.json_name or _lower_camel(f.name),
                    message_type=(
                        f.type_name.removeprefix(".")
                        if f.type == descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
                        else None
                    ),
                    repeated=f.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
                )
                for f in message.field
            ),
            map_entry=message.options.map_entry,
        )
        yield from _messages(full_name, message.nested_type)


def _enums(
    scope: str,
    enums: Iterable[descriptor_pb2.EnumDescriptorProto],
    messages: Iterable[descriptor_pb2.DescriptorProto],
) -> Iterator[tuple[str, tuple[EnumValue, ...]]]:
    for enum in enums:
        name = f"{scope}.{enum.name}" if scope else enum.name
        yield name, tuple(EnumValue(v.name, v.number) for v in enum.value)
    for message in messages:
        nested = f"{scope}.{message.name}" if scope else message.name
        yield from _enums(nested, message.enum_type, message.nested_type)


def load_contract(descriptor_set: Path) -> ApiContract:
    """Reads the VaultPay services (packages `vaultpay.*`) from a FileDescriptorSet."""
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    except (OSError, DecodeError) as exc:
        raise ContractError(f"cannot read descriptor set {descriptor_set}: {exc}") from exc
    services = [
        Service(
            full_name=f"{file.package}.{service.name}",
            package=file.package,
            rpcs=tuple(_rpc(f"{file.package}.{service.name}", m) for m in service.method),
        )
        for file in files
        if file.package.startswith(API_PACKAGE_PREFIX)
        for service in file.service
    ]
    if not services:
        raise ContractError(f"no {API_PACKAGE_PREFIX}* services in {descriptor_set}")
    messages = {
        m.full_name: m for file in files for m in _messages(file.package, file.message_type)
    }
    enums = dict(
        entry for file in files for entry in _enums(file.package, file.enum_type, file.message_type)
    )
    return ApiContract(
        tuple(sorted(services, key=lambda s: s.full_name)),
        MappingProxyType(messages),
        MappingProxyType(enums),
    )
