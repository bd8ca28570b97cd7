"""A JSON reply codec for frozen dataclasses, built once from the type hints.

The stored reply of an idempotent call must come back as the very value the first call
returned, so the codec refuses at construction any field type it cannot round-trip exactly
(floats, Decimals, bytes, dicts, unions other than `X | None`):

    @dataclass(frozen=True)
    class PinSet:
        wallet_id: str
        changed_at: datetime

    codec = DataclassCodec(PinSet)
    codec.loads(codec.dumps(PinSet("VPY-ABC123", now))) == PinSet("VPY-ABC123", now)

Supported: str, int, bool, None, aware datetime, Enum (stored by member name), nested
dataclasses, list[X], tuple[X, ...], tuple[X, Y], and `X | None` of those. Missing fields
that have defaults take them on load (a reply stored by the previous release); unknown keys
are ignored.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import Any, Generic, TypeVar, cast

__all__ = ["DataclassCodec", "UnsupportedTypeError"]

T = TypeVar("T")

_Json = Any
_Encode = Callable[[Any], _Json]
_Decode = Callable[[_Json], Any]


class UnsupportedTypeError(TypeError):
    """A dataclass field type the codec cannot round-trip exactly."""


def _check(ok: bool, what: str, value: object) -> None:
    if not ok:
        raise ValueError(f"expected {what}, got {type(value).__name__}")


def _scalar(kind: type) -> tuple[_Encode, _Decode]:
    def encode(value: Any) -> _Json:
        _check(type(value) is kind, kind.__name__, value)
        return value

    def decode(data: _Json) -> Any:
        _check(type(data) is kind, kind.__name__, data)
        return data

    return encode, decode


def _none() -> tuple[_Encode, _Decode]:
    def same(value: Any) -> _Json:
        _check(value is None, "None", value)
        return None

    return same, same


def _datetime() -> tuple[_Encode, _Decode]:
    def encode(value: Any) -> _Json:
        _check(isinstance(value, datetime), "datetime", value)
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetimes are refused: use an aware (UTC) datetime")
        return value.isoformat()

    def decode(data: _Json) -> Any:
        _check(isinstance(data, str), "an ISO 8601 string", data)
        parsed = datetime.fromisoformat(data)
        if parsed.tzinfo is None:
            raise ValueError("stored datetime has no time zone")
        return parsed

    return encode, decode


def _enum(cls: type[Enum]) -> tuple[_Encode, _Decode]:
    def encode(value: Any) -> _Json:
        _check(isinstance(value, cls), cls.__name__, value)
        return value.name

    def decode(data: _Json) -> Any:
        _check(isinstance(data, str), f"a {cls.__name__} member name", data)
        return cls[data]

    return encode, decode


def _optional(inner: tuple[_Encode, _Decode]) -> tuple[_Encode, _Decode]:
    enc, dec = inner
    return (lambda v: None if v is None else enc(v)), (lambda d: None if d is None else dec(d))


def _sequence(item: tuple[_Encode, _Decode], kind: type) -> tuple[_Encode, _Decode]:
    enc, dec = item

    def encode(value: Any) -> _Json:
        _check(isinstance(value, kind), kind.__name__, value)
        return [enc(v) for v in value]

    def decode(data: _Json) -> Any:
        _check(isinstance(data, list), "a JSON array", data)
        return kind(dec(d) for d in data)

    return encode, decode


def _fixed_tuple(items: list[tuple[_Encode, _Decode]]) -> tuple[_Encode, _Decode]:
    def encode(value: Any) -> _Json:
        _check(isinstance(value, tuple) and len(value) == len(items), "a tuple", value)
        return [enc(v) for (enc, _), v in zip(items, value, strict=True)]

    def decode(data: _Json) -> Any:
        _check(isinstance(data, list) and len(data) == len(items), "a JSON array", data)
        return tuple(dec(d) for (_, dec), d in zip(items, data, strict=True))

    return encode, decode


def _dataclass(cls: type[Any], seen: frozenset[type]) -> tuple[_Encode, _Decode]:
    if cls in seen:
        raise UnsupportedTypeError(f"recursive dataclass {cls.__name__} is not supported")
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    coders = {f.name: _coder(hints[f.name], seen | {cls}) for f in fields}
    defaults = {
        f.name
        for f in fields
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }

    def encode(value: Any) -> _Json:
        _check(type(value) is cls, cls.__name__, value)
        return {name: enc(getattr(value, name)) for name, (enc, _) in coders.items()}

    def decode(data: _Json) -> Any:
        _check(isinstance(data, dict), "a JSON object", data)
        kwargs = {}
        for name, (_, dec) in coders.items():
            if name in data:
                kwargs[name] = dec(data[name])
            elif name not in defaults:
                raise ValueError(f"stored {cls.__name__} lacks the field {name!r}")
        return cls(**kwargs)

    return encode, decode


def _coder(hint: Any, seen: frozenset[type]) -> tuple[_Encode, _Decode]:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint in (str, int, bool):
        return _scalar(hint)
    if hint is None or hint is type(None):
        return _none()
    if hint is datetime:
        return _datetime()
    if isinstance(hint, type) and issubclass(hint, Enum):
        return _enum(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _dataclass(hint, seen)
    if origin in (typing.Union, types.UnionType):
        others = [a for a in args if a is not type(None)]
        if len(args) == 2 and len(others) == 1:
            return _optional(_coder(others[0], seen))
    if origin is list and len(args) == 1:
        return _sequence(_coder(args[0], seen), list)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _sequence(_coder(args[0], seen), tuple)
    if origin is tuple and args and Ellipsis not in args:
        return _fixed_tuple([_coder(a, seen) for a in args])
    raise UnsupportedTypeError(f"the reply codec cannot store values of type {hint!r}")


class DataclassCodec(Generic[T]):
    """JSON bytes for one dataclass type; see the module docstring for what it accepts."""

    def __init__(self, cls: type[T]) -> None:
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise UnsupportedTypeError(f"{cls!r} is not a dataclass")
        self._cls = cls
        self._encode, self._decode = _dataclass(cls, frozenset())

    def dumps(self, value: T) -> bytes:
        body = self._encode(value)
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def loads(self, data: bytes) -> T:
        return cast(T, self._decode(json.loads(data)))
