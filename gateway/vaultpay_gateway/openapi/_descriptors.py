"""The descriptor set as the OpenAPI generator needs it: types by full name, and comments.

`contract` keeps only what Envoy's config needs. The document also needs every field's type,
enum values, and the proto comments (`SourceCodeInfo`, which `make descriptor` keeps).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

from vaultpay_gateway.contract import ContractError

__all__ = ["ProtoIndex", "read_descriptor_set"]

# Field numbers inside descriptor.proto, as they appear in SourceCodeInfo location paths.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM = 2, 3, 4
_ENUM_VALUE = 2
_SERVICE_METHOD = 2

# (kind, full name[, member]) -> comment. Kinds: message, field, enum, value, service, method.
CommentKey = tuple[str, ...]


def read_descriptor_set(path: Path) -> descriptor_pb2.FileDescriptorSet:
    try:
        return descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    except (OSError, DecodeError) as exc:
        raise ContractError(f"cannot read descriptor set {path}: {exc}") from exc


def _clean(comment: str) -> str:
    """protoc keeps the text after `//` as is: drop the one space after the slashes."""
    lines = [line.removeprefix(" ").rstrip() for line in comment.split("\n")]
    return textwrap.dedent("\n".join(lines)).strip()


@dataclass(frozen=True, slots=True)
class ProtoIndex:
    messages: Mapping[str, descriptor_pb2.DescriptorProto]
    enums: Mapping[str, descriptor_pb2.EnumDescriptorProto]
    services: Mapping[str, descriptor_pb2.ServiceDescriptorProto]
    comments: Mapping[CommentKey, str]

    @classmethod
    def of(cls, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> ProtoIndex:
        builder = _IndexBuilder()
        for file in files:
            builder.add_file(file)
        return cls(
            MappingProxyType(builder.messages),
            MappingProxyType(builder.enums),
            MappingProxyType(builder.services),
            MappingProxyType(builder.comments),
        )

    def comment(self, *key: str) -> str:
        return self.comments.get(key, "")

    def message(self, full_name: str) -> descriptor_pb2.DescriptorProto:
        try:
            return self.messages[full_name]
        except KeyError:
            raise ContractError(f"message {full_name} is not in the descriptor set") from None

    def enum(self, full_name: str) -> descriptor_pb2.EnumDescriptorProto:
        try:
            return self.enums[full_name]
        except KeyError:
            raise ContractError(f"enum {full_name} is not in the descriptor set") from None

    def method(self, service: str, name: str) -> descriptor_pb2.MethodDescriptorProto:
        try:
            return next(m for m in self.services[service].method if m.name == name)
        except (KeyError, StopIteration):
            raise ContractError(f"RPC {service}.{name} is not in the descriptor set") from None


class _IndexBuilder:
    def __init__(self) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.services: dict[str, descriptor_pb2.ServiceDescriptorProto] = {}
        self.comments: dict[CommentKey, str] = {}
        self._located: dict[tuple[int, ...], str] = {}

    def add_file(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        self._located = {}
        for location in file.source_code_info.location:
            text = location.leading_comments or location.trailing_comments
            if text.strip():
                self._located[tuple(location.path)] = _clean(text)
        scope = file.package
        for i, message in enumerate(file.message_type):
            self._message(scope, message, (_FILE_MESSAGE, i))
        for i, enum in enumerate(file.enum_type):
            self._enum(scope, enum, (_FILE_ENUM, i))
        for i, service in enumerate(file.service):
            full_name = f"{scope}.{service.name}" if scope else service.name
            self.services[full_name] = service
            self._comment(("service", full_name), (_FILE_SERVICE, i))
            for j, method in enumerate(service.method):
                self._comment(
                    ("method", full_name, method.name), (_FILE_SERVICE, i, _SERVICE_METHOD, j)
                )

    def _comment(self, key: CommentKey, path: tuple[int, ...]) -> None:
        text = self._located.get(path)
        if text:
            self.comments[key] = text

    def _message(
        self, scope: str, message: descriptor_pb2.DescriptorProto, path: tuple[int, ...]
    ) -> None:
        full_name = f"{scope}.{message.name}" if scope else message.name
        self.messages[full_name] = message
        self._comment(("message", full_name), path)
        for k, field in enumerate(message.field):
            self._comment(("field", full_name, field.name), (*path, _MESSAGE_FIELD, k))
        for j, nested in enumerate(message.nested_type):
            self._message(full_name, nested, (*path, _MESSAGE_NESTED, j))
        for j, enum in enumerate(message.enum_type):
            self._enum(full_name, enum, (*path, _MESSAGE_ENUM, j))

    def _enum(
        self, scope: str, enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...]
    ) -> None:
        full_name = f"{scope}.{enum.name}" if scope else enum.name
        self.enums[full_name] = enum
        self._comment(("enum", full_name), path)
        for k, value in enumerate(enum.value):
            self._comment(("value", full_name, value.name), (*path, _ENUM_VALUE, k))
