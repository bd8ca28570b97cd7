"""An in-memory `IdempotencyRecords` with the SQL version's replay/reuse semantics.

Plain attribute state, so a `FakeUnitOfWork` that lists it in `_state_holders` rolls a saved
reply back with the rest of a transaction that did not commit. A single-threaded fake has no
concurrent first call; a test simulates one with `hold(key)`:

    records = FakeIdempotencyRecords()
    records.hold(key)            # another call is still running with this key
    with pytest.raises(IdempotencyKeyInUseError): ...
"""

from __future__ import annotations

from vaultpay_common.idempotency.model import (
    IdempotencyKey,
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
)

__all__ = ["FakeIdempotencyRecords"]

_Scope = tuple[str, str, str]


def _scope(key: IdempotencyKey) -> _Scope:
    return (key.caller, key.method, key.request_id)


class FakeIdempotencyRecords:
    def __init__(self) -> None:
        # (caller, method, request_id) -> (fingerprint, stored reply)
        self.records: dict[_Scope, tuple[str, bytes]] = {}
        self.held: set[_Scope] = set()
        self.claims = 0

    async def claim(self, key: IdempotencyKey) -> bytes | None:
        self.claims += 1
        if _scope(key) in self.held:
            raise IdempotencyKeyInUseError()
        stored = self.records.get(_scope(key))
        if stored is None:
            return None
        fingerprint, reply = stored
        if fingerprint != key.fingerprint:
            raise IdempotencyKeyReusedError()
        return reply

    async def save(self, key: IdempotencyKey, reply: bytes) -> None:
        if _scope(key) in self.records:
            # The SQL primary key refuses a second record for a key; so does the fake.
            raise IdempotencyKeyInUseError()
        self.records[_scope(key)] = (key.fingerprint, reply)

    def hold(self, key: IdempotencyKey) -> None:
        """Pretends another call holds `key` (its transaction is still open)."""
        self.held.add(_scope(key))

    def release(self, key: IdempotencyKey) -> None:
        self.held.discard(_scope(key))

    def reply_for(self, key: IdempotencyKey) -> bytes | None:
        stored = self.records.get(_scope(key))
        return None if stored is None else stored[1]
