"""Protobuf types as OpenAPI 3.0 schemas, following the proto3 JSON mapping.

What the transcoder prints (and accepts) decides every schema:

- field names are the JSON names (lowerCamelCase);
- 64-bit integers are strings (`"125050"`), 32-bit ones numbers;
- enums are strings of their value names (the gateway prints names, never numbers);
- bytes are base64 strings, `google.protobuf.Timestamp` an RFC 3339 `date-time` string,
  `Duration` a string such as `"1.5s"`, wrappers the wrapped value;
- repeated fields are arrays, maps objects (keys are always strings in JSON);
- messages and enums of the contract are components (`#/components/schemas/<full name>`)
  referenced with `$ref`. OpenAPI 3.0 ignores siblings of `$ref`, so a field's own comment
  sits beside the reference in a one-element `anyOf`. (The usual `allOf` wrapper is as valid,
  but Swagger UI 4 then shows nested messages as `"string"` in its examples and schema view
  from the second level down; `anyOf` renders right.)
"""

from __future__ import annotations

import copy
from collections.abc import Collection

from google.protobuf import descriptor_pb2

from vaultpay_gateway._types import Json
from vaultpay_gateway.openapi._descriptors import ProtoIndex

__all__ = ["SCHEMA_PREFIX", "SchemaBuilder", "is_scalar_json", "schema_ref"]

SCHEMA_PREFIX = "#/components/schemas/"

_F = descriptor_pb2.FieldDescriptorProto
# Without an example Swagger UI makes one up from the pattern: 70 random digits.
_INT64: Json = {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$", "example": "0"}
_UINT64: Json = {"type": "string", "format": "uint64", "pattern": "^[0-9]+$", "example": "0"}
_SCALARS: dict[int, Json] = {
    _F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _F.TYPE_FLOAT: {"type": "number", "format": "float"},
    _F.TYPE_INT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _F.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    _F.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    _F.TYPE_INT64: _INT64,
    _F.TYPE_SINT64: _INT64,
    _F.TYPE_SFIXED64: _INT64,
    _F.TYPE_UINT64: _UINT64,
    _F.TYPE_FIXED64: _UINT64,
    _F.TYPE_BOOL: {"type": "boolean"},
    _F.TYPE_STRING: {"type": "string"},
    _F.TYPE_BYTES: {"type": "string", "format": "byte"},
}

# Well-known types with a JSON form of their own, inlined where they are used.
_WKT = "google.protobuf."
_WELL_KNOWN: dict[str, Json] = {
    _WKT + "Timestamp": {"type": "string", "format": "date-time"},
    _WKT + "Duration": {
        "type": "string",
        "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
        "description": "Seconds with up to 9 fractional digits and the suffix `s`, e.g. `1.5s`.",
    },
    _WKT + "FieldMask": {
        "type": "string",
        "description": "Comma-separated field paths in lowerCamelCase, e.g. `fullName,email`.",
    },
    _WKT + "Empty": {"type": "object"},
    _WKT + "Struct": {"type": "object", "additionalProperties": {}},
    _WKT + "Value": {"nullable": True, "description": "Any JSON value."},
    _WKT + "ListValue": {"type": "array", "items": {}},
    _WKT + "Any": {
        "type": "object",
        "required": ["@type"],
        "properties": {
            "@type": {"type": "string", "description": "The packed message's type URL."}
        },
        "additionalProperties": True,
    },
    _WKT + "DoubleValue": {"type": "number", "format": "double", "nullable": True},
    _WKT + "FloatValue": {"type": "number", "format": "float", "nullable": True},
    _WKT + "Int64Value": {**_SCALARS[_F.TYPE_INT64], "nullable": True},
    _WKT + "UInt64Value": {**_SCALARS[_F.TYPE_UINT64], "nullable": True},
    _WKT + "Int32Value": {"type": "integer", "format": "int32", "nullable": True},
    _WKT + "UInt32Value": {**_SCALARS[_F.TYPE_UINT32], "nullable": True},
    _WKT + "BoolValue": {"type": "boolean", "nullable": True},
    _WKT + "StringValue": {"type": "string", "nullable": True},
    _WKT + "BytesValue": {"type": "string", "format": "byte", "nullable": True},
}
# Those a query parameter can carry (a single string value).
_SCALAR_WELL_KNOWN = frozenset(_WELL_KNOWN) - {
    _WKT + name for name in ("Empty", "Struct", "Value", "ListValue", "Any")
}


def schema_ref(full_name: str) -> Json:
    return {"$ref": SCHEMA_PREFIX + full_name}


def is_scalar_json(field: descriptor_pb2.FieldDescriptorProto) -> bool:
    """Whether one value of the field is a JSON scalar (usable as a query parameter)."""
    if field.type == _F.TYPE_MESSAGE:
        return field.type_name.removeprefix(".") in _SCALAR_WELL_KNOWN
    return field.type != _F.TYPE_GROUP


def _describe(schema: Json, description: str) -> Json:
    """`schema` with a description; a bare `$ref` is wrapped so the description counts."""
    if not description:
        return schema
    if "$ref" in schema:
        return {"anyOf": [schema], "description": description}
    if "description" in schema:
        return {**schema, "description": f"{description}\n\n{schema['description']}"}
    return {**schema, "description": description}


class SchemaBuilder:
    """Builds field schemas and collects the component schemas they reference."""

    def __init__(self, index: ProtoIndex) -> None:
        self._index = index
        self.components: dict[str, Json] = {}

    # --- types ---

    def type_schema(self, full_name: str) -> Json:
        """A message or enum by full name: inline for well-known types, else a `$ref`."""
        if full_name in _WELL_KNOWN:
            return copy.deepcopy(_WELL_KNOWN[full_name])
        if full_name not in self.components:
            # A placeholder first, so recursive messages end.
            self.components[full_name] = {}
            if full_name in self._index.enums:
                self.components[full_name] = self._enum(full_name)
            else:
                self.components[full_name] = self.message_schema(full_name)
        return schema_ref(full_name)

    def message_schema(self, full_name: str, omit: Collection[str] = ()) -> Json:
        """The object schema of a message, without the proto fields named in `omit`."""
        message = self._index.message(full_name)
        schema: Json = {"type": "object"}
        properties = {
            field.json_name or field.name: self.field_schema(full_name, field)
            for field in message.field
            if field.name not in omit
        }
        if properties:
            schema["properties"] = properties
        description = self._index.comment("message", full_name)
        oneofs = self._oneof_note(message)
        if oneofs:
            description = f"{description}\n\n{oneofs}".strip()
        return _describe(schema, description)

    def _oneof_note(self, message: descriptor_pb2.DescriptorProto) -> str:
        notes = []
        for index, oneof in enumerate(message.oneof_decl):
            members = [
                f"`{f.json_name or f.name}`"
                for f in message.field
                if f.HasField("oneof_index") and f.oneof_index == index and not f.proto3_optional
            ]
            if members:
                notes.append(f"At most one of {', '.join(members)} is set (oneof `{oneof.name}`).")
        return " ".join(notes)

    def _enum(self, full_name: str) -> Json:
        enum = self._index.enum(full_name)
        lines = []
        for value in enum.value:
            about = " ".join(self._index.comment("value", full_name, value.name).split())
            lines.append(f"- `{value.name}`: {about}" if about else f"- `{value.name}`")
        description = f"{self._index.comment('enum', full_name)}\n\n" + "\n".join(lines)
        return {
            "type": "string",
            "enum": [value.name for value in enum.value],
            "description": description.strip(),
        }

    # --- fields ---

    def element_schema(self, field: descriptor_pb2.FieldDescriptorProto) -> Json:
        """The schema of one value of the field (an element, for a repeated field)."""
        if field.type in (_F.TYPE_MESSAGE, _F.TYPE_ENUM, _F.TYPE_GROUP):
            return self.type_schema(field.type_name.removeprefix("."))
        return copy.deepcopy(_SCALARS[field.type])

    def map_entry(
        self, field: descriptor_pb2.FieldDescriptorProto
    ) -> descriptor_pb2.DescriptorProto | None:
        if field.type != _F.TYPE_MESSAGE or field.label != _F.LABEL_REPEATED:
            return None
        entry = self._index.messages.get(field.type_name.removeprefix("."))
        return entry if entry is not None and entry.options.map_entry else None

    def value_schema(self, field: descriptor_pb2.FieldDescriptorProto) -> Json:
        """The field's JSON value: arrays for repeated fields, objects for maps."""
        entry = self.map_entry(field)
        if entry is not None:
            key, value = entry.field[0], entry.field[1]
            schema: Json = {"type": "object", "additionalProperties": self.element_schema(value)}
            if key.type == _F.TYPE_BOOL:
                schema["description"] = "Keys are `true` or `false`."
            elif key.type != _F.TYPE_STRING:
                kind = _F.Type.Name(key.type).removeprefix("TYPE_").lower()
                schema["description"] = f"Keys are {kind} numbers, written as strings."
            return schema
        if field.label == _F.LABEL_REPEATED:
            return {"type": "array", "items": self.element_schema(field)}
        return self.element_schema(field)

    def field_schema(self, owner: str, field: descriptor_pb2.FieldDescriptorProto) -> Json:
        """The field's JSON value, described with the field's comment."""
        return _describe(self.value_schema(field), self._index.comment("field", owner, field.name))

    def field_comment(self, owner: str, field: descriptor_pb2.FieldDescriptorProto) -> str:
        return self._index.comment("field", owner, field.name)
