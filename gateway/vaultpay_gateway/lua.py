"""Lua literals for the filters the gateway generates (config-time data, never a request's).

lua_string('say "hi"\n')   # '"say \\034hi\\034\\010"'
lua_bytes(b"\x08\x01")     # '"\\8\\1"'
"""

from __future__ import annotations

__all__ = ["lua_bytes", "lua_string"]


def lua_string(text: str) -> str:
    """A Lua string literal of `text`'s UTF-8 bytes: printable ASCII as itself, every other
    byte (quotes, backslashes, controls, non-ASCII) as a decimal escape, so no entry can end
    the literal or the chunk whatever it holds."""
    out = [
        chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\{b:03d}"
        for b in text.encode()
    ]
    return '"' + "".join(out) + '"'


def lua_bytes(data: bytes) -> str:
    """A Lua string literal of arbitrary bytes (every byte as a decimal escape)."""
    return '"' + "".join(f"\\{b}" for b in data) + '"'
