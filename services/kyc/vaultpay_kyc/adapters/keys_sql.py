"""SQLAlchemy Core repository of key-encryption key ids, rotations and the re-wrap sweep.

Lock choreography (see service_layer/rotation.py for the steps):
- a submission holds the active key's row FOR KEY SHARE until it commits;
- activating a new key flips the old row's state (FOR NO KEY UPDATE: no conflict with the
  writers, the partial unique index is not a "key"), serialised by an advisory lock;
- the sweep locks submission rows FOR NO KEY UPDATE SKIP LOCKED;
- dropping a key DELETEs its row, which waits for writers still holding it FOR KEY SHARE and
  then fails on the foreign key if one of them stored a row under it (KeyStillInUseError).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import and_, bindparam, delete, exists, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from vaultpay_kyc.adapters.tables import kyc_key_rotations, kyc_keys, kyc_submissions
from vaultpay_kyc.domain.crypto import WrappedKey
from vaultpay_kyc.domain.errors import NoActiveKeyError
from vaultpay_kyc.service_layer.ports import KeyStillInUseError, RewrapRow, Rotation

__all__ = ["SqlKeyRepository"]

_FOREIGN_KEY_VIOLATION = "23503"
# Serialises key activations across replicas and the CLI (bytes "VPKYCKEY").
_ACTIVATE_LOCK = int.from_bytes(b"VPKYCKEY", "big") & 0x7FFF_FFFF_FFFF_FFFF
_ACTIVE_READ_ATTEMPTS = 3
k = kyc_keys.c
s = kyc_submissions.c
r = kyc_key_rotations.c
_RETIRING = select(k.key_id).where(k.state == "RETIRING").scalar_subquery()


def _rotation(row: Any) -> Rotation:
    return Rotation(
        rotation_id=str(row.rotation_id),
        from_key_id=row.from_key_id,
        to_key_id=row.to_key_id,
        started_by=row.started_by,
        started_at=row.started_at,
        reencrypted_count=int(row.reencrypted_count),
        finished_at=row.finished_at,
    )


class SqlKeyRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def active_key_id(self, *, for_write: bool = False) -> str:
        query = select(k.key_id).where(k.state == "ACTIVE")
        if for_write:
            query = query.with_for_update(read=True, key_share=True)  # FOR KEY SHARE
        # A locking read that meets a row flipped to RETIRING by a rotation that committed
        # meanwhile re-checks it and finds nothing; the next statement sees the new key.
        for _ in range(_ACTIVE_READ_ATTEMPTS):
            key_id = (await self._conn.execute(query)).scalar_one_or_none()
            if key_id is not None:
                return str(key_id)
        raise NoActiveKeyError("kyc_keys has no active key: run `vaultpay-kyc migrate`")

    async def lock_activation(self) -> None:
        await self._conn.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ACTIVATE_LOCK}
        )

    async def activate(self, new_key_id: str, now: datetime) -> str:
        await self.lock_activation()  # taken again by the same transaction: it stacks
        previous = await self.active_key_id()
        await self._conn.execute(
            update(kyc_keys)
            .where(k.key_id == previous)
            .values(state="RETIRING", retiring_since=now)
        )
        await self._conn.execute(
            insert(kyc_keys).values(key_id=new_key_id, state="ACTIVE", created_at=now)
        )
        return previous

    async def add_rotation(self, rotation: Rotation) -> datetime:
        # Under activate's lock: the rotations committed before are visible, and none starts
        # until this one commits, so "just after the latest" orders them as they took it.
        latest = select(func.max(r.started_at) + text("interval '1 microsecond'")).scalar_subquery()
        started_at = (
            await self._conn.execute(
                insert(kyc_key_rotations)
                .values(
                    rotation_id=rotation.rotation_id,
                    from_key_id=rotation.from_key_id,
                    to_key_id=rotation.to_key_id,
                    started_by=rotation.started_by,
                    started_at=func.greatest(rotation.started_at, latest),
                )
                .returning(r.started_at)
            )
        ).scalar_one()
        return cast(datetime, started_at)

    async def get_rotation(self, rotation_id: str) -> Rotation | None:
        row = (
            await self._conn.execute(select(kyc_key_rotations).where(r.rotation_id == rotation_id))
        ).first()
        return None if row is None else _rotation(row)

    async def unfinished_rotation(self) -> Rotation | None:
        row = (
            await self._conn.execute(
                select(kyc_key_rotations)
                .where(r.finished_at.is_(None))
                .order_by(r.started_at.desc())
                .limit(1)
            )
        ).first()
        return None if row is None else _rotation(row)

    def _on_retiring_keys(self, skip: Sequence[str]) -> Any:
        if skip:
            return and_(s.key_id.in_(_RETIRING), s.id.not_in(list(skip)))
        return s.key_id.in_(_RETIRING)

    async def rows_to_rewrap(self, limit: int, *, skip: Sequence[str] = ()) -> list[RewrapRow]:
        rows = await self._conn.execute(
            select(s.id, s.user_id, s.key_id, s.wrapped_key)
            .where(self._on_retiring_keys(skip))
            .order_by(s.id)
            .limit(limit)
            .with_for_update(skip_locked=True, key_share=True, of=kyc_submissions)
        )
        return [
            RewrapRow(str(row.id), row.user_id, WrappedKey(row.key_id, bytes(row.wrapped_key)))
            for row in rows
        ]

    async def count_rows_to_rewrap(self, *, skip: Sequence[str] = ()) -> int:
        query = select(func.count()).where(self._on_retiring_keys(skip))
        return int((await self._conn.execute(query)).scalar_one())

    async def set_wrapped_keys(self, rows: Sequence[tuple[str, WrappedKey]]) -> None:
        if not rows:
            return
        await self._conn.execute(
            update(kyc_submissions)
            .where(s.id == bindparam("sid"))
            .values(key_id=bindparam("kid"), wrapped_key=bindparam("blob")),
            [{"sid": sid, "kid": w.key_id, "blob": w.blob} for sid, w in rows],
        )

    async def add_rewrapped(self, rotation_id: str, count: int) -> None:
        await self._conn.execute(
            update(kyc_key_rotations)
            .where(r.rotation_id == rotation_id)
            .values(reencrypted_count=r.reencrypted_count + count)
        )

    async def drop_unused_keys(self) -> list[str]:
        used = exists().where(s.key_id == k.key_id)
        try:
            async with self._conn.begin_nested():
                rows = await self._conn.execute(
                    delete(kyc_keys).where(k.state == "RETIRING", ~used).returning(k.key_id)
                )
                return sorted(str(row.key_id) for row in rows)
        except IntegrityError as exc:
            if getattr(exc.orig, "sqlstate", "") == _FOREIGN_KEY_VIOLATION:
                raise KeyStillInUseError() from exc
            raise

    async def retiring_key_ids(self) -> list[str]:
        rows = await self._conn.execute(
            select(k.key_id).where(k.state == "RETIRING").order_by(k.key_id)
        )
        return [str(row.key_id) for row in rows]

    async def finish_rotations(self, now: datetime, *, through_key: str) -> list[Rotation]:
        newest = select(func.max(r.started_at)).where(r.to_key_id == through_key).scalar_subquery()
        rows = await self._conn.execute(
            update(kyc_key_rotations)
            .where(
                r.finished_at.is_(None),
                r.started_at <= func.coalesce(newest, text("'infinity'::timestamptz")),
            )
            .values(finished_at=now)
            .returning(*kyc_key_rotations.c)
        )
        return [_rotation(row) for row in rows]
