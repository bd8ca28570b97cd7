"""`run_once`: the one way a use case makes itself idempotent.

    async with uow:
        return await run_once(uow, key, REPLY, lambda: _set_pin(uow, command))

The claim, the work, the stored reply and the commit share the unit of work's transaction,
so either all of them happen or none does. A failed call (a domain error, a crash) stores
nothing: a retry with the same request id runs again, which is what a client that fixed the
cause (topped up, waited for the unfreeze) expects. Only a success is replayed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from vaultpay_common.idempotency.model import IdempotencyKey, IdempotencyRecords, ReplyCodec

__all__ = ["IdempotentUnitOfWork", "run_once"]

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
