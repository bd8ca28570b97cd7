"""Which keys a JSON request body may carry, per RPC, derived from the contract.

Envoy's transcoder drops JSON keys it does not know (envoyproxy/envoy#46623); the gateway
rejects them instead (`json_body` runs the check inside Envoy). What is allowed comes from the
same descriptors the transcoder uses:

- `body: "*"`: the request message minus the fields bound by the path template (they belong to
  the URL; in the body they are refused as well). `body: "field"`: that field's value.
  Bindings without `body` are checked like `"*"`, because Envoy decodes a body sent to them
  (a `GET` with a body) into the request message all the same.
- A key is known under its JSON name (`fullName`) and its proto name (`full_name`): proto3
  JSON parsers accept both, and so does the transcoder. Nothing else (not `FullName`). Both
  spellings name one field (`MessageRule.aliases`), so sending both is a duplicate key.
- `body: "*"` takes nothing from the query string (`BodyBinding.accepts_query`): the
  transcoder would fill fields from it, which puts passwords and tokens into URLs.
- Message fields are checked recursively: repeated ones element by element, maps with any key
  and their values checked when they are messages.
- A JSON array where the field is singular (a scalar, a message, a map) is refused naming the
  field: the transcoder's own words name at most its parent ("amount: Proto field is not
  repeating, cannot start list").
- Well-known types with a JSON form of their own (Timestamp, Duration, FieldMask, wrappers,
  Struct, Value, ListValue, Any) and `google.api.HttpBody` are opaque: the transcoder decides.

    schemas = body_schemas(load_contract(Path("build/vaultpay.binpb")))
    (binding,) = schemas.rpcs["/vaultpay.auth.v1.AuthService/Register"]
    schemas.violations(binding.body, {"email": "a@b.c", "isAdmin": True})
    # [Violation(field='isAdmin', description='unknown field')]
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from vaultpay_gateway.contract import ApiContract, ContractError, MessageField, Rpc
from vaultpay_gateway.path_shapes import EmptyVariable, empty_variable_shapes

__all__ = [
    "ANY_VALUE",
    "LIST_NOT_EXPECTED",
    "OPAQUE_MESSAGES",
    "BodyBinding",
    "BodySchemas",
    "MessageRule",
    "ValueRule",
    "Violation",
    "body_schemas",
    "path_variables",
]

# Types whose JSON is not an object of their fields; the transcoder checks them itself.
OPAQUE_MESSAGES = frozenset(
    {
        "google.api.HttpBody",
        "google.protobuf.Any",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.ListValue",
        "google.protobuf.Struct",
        "google.protobuf.Timestamp",
        "google.protobuf.Value",
        *(
            f"google.protobuf.{kind}Value"
            for kind in ("Bool", "Bytes", "Double", "Float", "Int32", "Int64", "String")
        ),
        "google.protobuf.UInt32Value",
        "google.protobuf.UInt64Value",
    }
)

UNKNOWN_FIELD = "unknown field"
LIST_NOT_EXPECTED = "a list where a single value is expected"
# Opaque types whose JSON form may be an array.
_LIST_CAPABLE = frozenset({"google.protobuf.ListValue", "google.protobuf.Value"})
PATH_BOUND_FIELD = "set by the URL path, not by the body"
_VARIABLE = re.compile(r"\{([^}=]+)(?:=[^}]*)?\}")


@dataclass(frozen=True, slots=True)
class ValueRule:
    """What one JSON value may hold.

    `message` None: anything. Otherwise objects are checked against that message rule (an
    array is checked element by element); with `is_map` the object's keys are free and its
    values follow `message`. `single`: the field is not repeated, so an array is refused.
    """

    message: str | None = None
    is_map: bool = False
    single: bool = False


ANY_VALUE = ValueRule()
SINGLE_VALUE = ValueRule(single=True)


@dataclass(frozen=True, slots=True)
class MessageRule:
    """The keys one message accepts: JSON name and proto name of each field."""

    fields: Mapping[str, ValueRule]
    # Keys of fields that the URL path sets: refused in the body.
    path_bound: frozenset[str] = frozenset()
    # Proto name -> JSON name where they differ: the same field under its other spelling.
    aliases: Mapping[str, str] = dataclasses.field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class BodyBinding:
    """One HTTP binding of an RPC and what its body must look like."""

    method: str
    template: str
    body: ValueRule
    # False for `body: "*"`: every field comes from the body (or the path), none from the query.
    accepts_query: bool = True


class Violation(NamedTuple):
    field: str
    description: str


@dataclass(frozen=True, slots=True)
class BodySchemas:
    # Message rules by key: the message's full name, or `Name-bound.path…` for a request
    # message minus the fields its path template binds.
    messages: Mapping[str, MessageRule]
    # gRPC path -> the RPC's bindings; only routed RPCs whose body is checked.
    rpcs: Mapping[str, tuple[BodyBinding, ...]]
    # REST paths that leave a path variable empty and reach another RPC (`path_shapes`):
    # the check answers them 400 naming the empty field.
    empty_paths: tuple[EmptyVariable, ...] = ()

    def violations(self, rule: ValueRule, value: Any, limit: int = 10) -> list[Violation]:
        """What `check` in json_body.lua reports for an already parsed JSON value.

        Field paths follow google.rpc.BadRequest's JSON spelling: `amount.currencyCode`,
        `limits[1].foo`; a field of the contract by its JSON name whichever spelling the
        client sent (`full_name` -> `fullName`), map keys and unknown keys as sent. Not modelled:
        duplicate keys (the parsed value no longer shows them) and keys longer than
        json_body.MAX_KEY_BYTES (the check refuses them wherever they are, free-form values
        included; tests/gateway/test_gateway_json_escapes.py).
        """
        found: list[Violation] = []
        self._walk(rule, value, "", found, limit)
        return found

    def _walk(
        self, rule: ValueRule, value: Any, path: str, found: list[Violation], limit: int
    ) -> None:
        if len(found) >= limit:
            return
        if rule.single and isinstance(value, list):
            found.append(Violation(path, LIST_NOT_EXPECTED))
            return
        if rule.message is None:
            return
        if isinstance(value, list):
            for index, item in enumerate(value):
                self._walk(rule, item, f"{path}[{index}]", found, limit)
            return
        if not isinstance(value, dict):
            return
        message = self.messages[rule.message]
        for key, item in value.items():
            name = key if rule.is_map else message.aliases.get(key, key)
            where = f"{path}.{name}" if path else name
            if rule.is_map:
                self._walk(ValueRule(rule.message), item, where, found, limit)
            elif key in message.path_bound:
                found.append(Violation(where, PATH_BOUND_FIELD))
            elif key not in message.fields:
                found.append(Violation(where, UNKNOWN_FIELD))
            else:
                self._walk(message.fields[key], item, where, found, limit)
            if len(found) >= limit:
                return


def path_variables(template: str) -> frozenset[tuple[str, ...]]:
    """Field paths a path template binds: `/v1/{book.name=shelves/*}/x/{id}` ->
    {("book", "name"), ("id",)}."""
    return frozenset(tuple(m.group(1).strip().split(".")) for m in _VARIABLE.finditer(template))


class _Builder:
    def __init__(self, contract: ApiContract) -> None:
        self._contract = contract
        self.messages: dict[str, MessageRule] = {}

    def message(self, full_name: str, bound: frozenset[tuple[str, ...]] = frozenset()) -> ValueRule:
        if full_name in OPAQUE_MESSAGES:
            return ANY_VALUE
        key = full_name
        if bound:
            key += "-" + "-".join(sorted(".".join(path) for path in bound))
        if key not in self.messages:
            # A placeholder first, so recursive messages end.
            self.messages[key] = MessageRule(MappingProxyType({}))
            self.messages[key] = self._rule(full_name, bound)
        return ValueRule(key)

    def _rule(self, full_name: str, bound: frozenset[tuple[str, ...]]) -> MessageRule:
        fields: dict[str, ValueRule] = {}
        path_bound: set[str] = set()
        aliases: dict[str, str] = {}
        for field in self._contract.message(full_name).fields:
            names = {field.json_name, field.name}
            if field.name != field.json_name:
                aliases[field.name] = field.json_name
            under = {path[1:] for path in bound if path[0] == field.name}
            if () in under:
                path_bound |= names
                continue
            rule = self.value(field, frozenset(under))
            fields.update(dict.fromkeys(names, rule))
        return MessageRule(
            MappingProxyType(fields), frozenset(path_bound), MappingProxyType(aliases)
        )

    def value(
        self, field: MessageField, bound: frozenset[tuple[str, ...]] = frozenset()
    ) -> ValueRule:
        """The rule of one field's JSON value (of each element, for a repeated field)."""
        rule = self._element(field, bound)
        if (field.repeated and not rule.is_map) or field.message_type in _LIST_CAPABLE:
            return rule
        return dataclasses.replace(rule, single=True)

    def _element(self, field: MessageField, bound: frozenset[tuple[str, ...]]) -> ValueRule:
        if field.message_type is None or field.message_type in OPAQUE_MESSAGES:
            return ANY_VALUE
        target = self._contract.message(field.message_type)
        if target.map_entry:
            values = target.field("value")
            inner = self.value(values) if values is not None else ANY_VALUE
            return ValueRule(inner.message, is_map=True)
        return self.message(field.message_type, bound)

    def body(self, rpc: Rpc, body: str, template: str) -> ValueRule:
        bound = path_variables(template)
        if body in ("", "*"):
            return self.message(rpc.input_type, bound)
        field = self._contract.message(rpc.input_type).field(body)
        if field is None:
            raise ContractError(f"{rpc.full_name}: body field {body!r} is not in {rpc.input_type}")
        under = frozenset(p[1:] for p in bound if p[0] == body and len(p) > 1)
        # The body itself is whatever the transcoder makes of it; its fields are checked.
        return dataclasses.replace(self.value(field, under), single=False)


def body_schemas(contract: ApiContract) -> BodySchemas:
    """The body rules of every routed RPC with an HTTP binding (opaque bodies left out)."""
    builder = _Builder(contract)
    rpcs: dict[str, tuple[BodyBinding, ...]] = {}
    for rpc in contract.routed_rpcs():
        bindings = tuple(
            BodyBinding(
                b.method,
                b.template,
                builder.body(rpc, b.body, b.template),
                accepts_query=b.body != "*",
            )
            for b in rpc.http
        )
        if any(b.body != ANY_VALUE for b in bindings):
            rpcs[rpc.grpc_path] = bindings
    return BodySchemas(
        MappingProxyType(builder.messages),
        MappingProxyType(rpcs),
        empty_variable_shapes(contract),
    )
