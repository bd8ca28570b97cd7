"""Small helpers shared by the config builders."""

from __future__ import annotations

from typing import Any

__all__ = ["Json", "duration", "typed"]

Json = dict[str, Any]

_TYPE_PREFIX = "type.googleapis.com/"


def typed(type_name: str, **fields: Any) -> Json:
    """A `typed_config` Any: `typed("envoy.…v3.Router")`."""
    return {"@type": _TYPE_PREFIX + type_name, **fields}


def duration(seconds: float) -> str:
    """A protobuf Duration in JSON form: `duration(1.5) == "1.5s"`."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"
