"""`run_once`: the one way a use case makes itself idempotent.

    async with uow:
        return await run_once(uow, key, REPLY, lambda: _set_pin(uow, command))

The claim, the work, the stored reply and the commit share the unit of work's transaction,
so either all of them happen or none does. A failed call (a domain error, a crash) stores
nothing: a retry with the same request id runs again, which is what a client that fixed the
cause (topped up, waited for the unfreeze) expects. Only a success is replayed.

A use case that checks something before its transaction (a peer's answer, asked with no row
locked) asks `stored_reply` first, so a retry of a call that committed gets its reply whatever
changed since, instead of being refused by a check the first call passed:

    async with uow:
        replay = await stored_reply(uow, key, REPLY)
    if replay is not None:
        return replay
    await check_with_peer(...)
    async with uow:
        return await run_once(uow, key, REPLY, lambda: _change(uow, command))
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from vaultpay_common.idempotency.model import IdempotencyKey, IdempotencyRecords, ReplyCodec

__all__ = ["IdempotentUnitOfWork", "run_once", "stored_reply"]

T = TypeVar("T")


class IdempotentUnitOfWork(Protocol):
    """A unit of work whose transaction can hold idempotency keys."""

    @property
    def idempotency(self) -> IdempotencyRecords: ...

    async def commit(self) -> None: ...


async def run_once(
    uow: IdempotentUnitOfWork,
    key: IdempotencyKey | None,
    codec: ReplyCodec[T],
    work: Callable[[], Awaitable[T]],
) -> T:
    """Called inside an open `async with uow:`. key None: await work(), commit, return.
    Otherwise claim; a stored reply is decoded and returned (nothing else runs, nothing is
    committed); else result = await work(); save(key, codec.dumps(result)); commit; return."""
    if key is None:
        result = await work()
        await uow.commit()
        return result
    stored = await uow.idempotency.claim(key)
    if stored is not None:
        return codec.loads(stored)
    result = await work()
    await uow.idempotency.save(key, codec.dumps(result))
    await uow.commit()
    return result


async def stored_reply(
    uow: IdempotentUnitOfWork, key: IdempotencyKey | None, codec: ReplyCodec[T]
) -> T | None:
    """Called inside an open `async with uow:` that ends without commit: the reply an earlier
    call with `key` committed, decoded, or None (no key, or none stored). Raises as the
    claim does (IDEMPOTENCY_KEY_REUSED; IDEMPOTENCY_KEY_IN_USE while that call still runs).
    Only a look: the claim it takes ends with the block. `run_once` still claims the key in
    the change's own transaction, which decides."""
    if key is None:
        return None
    stored = await uow.idempotency.claim(key)
    return None if stored is None else codec.loads(stored)
