"""Idempotency records on a real PostgreSQL: replay, reuse, in-use, cleanup and the race."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vaultpay_common.db import SqlUnitOfWork, create_engine
from vaultpay_common.idempotency import (
    DataclassCodec,
    IdempotencyKey,
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    SqlIdempotencyRecords,
    delete_expired_idempotency_records,
    idempotency_service_ddl,
    idempotency_table_ddl,
    purge_expired_idempotency_records,
    run_once,
)
from vaultpay_devstack.postgres import Provisioned

pytestmark = pytest.mark.integration

METHOD = "/vaultpay.transfer.v1.TransferService/SendMoney"


@dataclass(frozen=True)
class Sent:
    transaction_id: str
    amount_minor: int


CODEC = DataclassCodec(Sent)


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current


class _Uow(SqlUnitOfWork):
    idempotency: SqlIdempotencyRecords

    def _bind(self, conn: AsyncConnection) -> None:
        self.idempotency = SqlIdempotencyRecords(conn)


@pytest.fixture(scope="module")
async def owner(databases: Provisioned) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(databases.vaultpay_owner_dsn, pool_size=2, application_name="idem-test")
    async with engine.begin() as conn:
        for statement in (
            *idempotency_table_ddl(databases.vaultpay_app_role),
            *idempotency_service_ddl(),
        ):
            await conn.execute(text(statement))
        # Stands in for a service's own table: the effect an idempotent call must make once.
        await conn.execute(text("CREATE TABLE sends (transaction_id uuid PRIMARY KEY, k text)"))
        await conn.execute(
            text(f'GRANT SELECT, INSERT ON sends TO "{databases.vaultpay_app_role}"')
        )
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def app(owner: AsyncEngine, databases: Provisioned) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(databases.app_dsn("wallet"), pool_size=25, application_name="idem-app")
    yield engine
    await engine.dispose()


def _key(body: bytes = b"to=VPY-B&amount=100", request_id: str | None = None) -> IdempotencyKey:
    return IdempotencyKey.for_request(
        caller="user-1", method=METHOD, request_id=request_id or str(uuid.uuid4()), payload=body
    )


async def _send(app: AsyncEngine, key: IdempotencyKey | None, *, hold: float = 0.0) -> Sent:
    """A stand-in money movement: one row in `sends` per effect."""
    async with _Uow(app) as uow:

        async def work() -> Sent:
            transaction_id = str(uuid.uuid4())
            await uow.connection.execute(
                text("INSERT INTO sends VALUES (CAST(:t AS uuid), :k)"),
                {"t": transaction_id, "k": key.request_id if key else ""},
            )
            if hold:
                await uow.connection.execute(text("SELECT pg_sleep(:s)"), {"s": hold})
            return Sent(transaction_id, 100)

        return await run_once(uow, key, CODEC, work)


async def _effects(app: AsyncEngine, key: IdempotencyKey) -> int:
    async with app.connect() as conn:
        count = await conn.scalar(
            text("SELECT count(*) FROM sends WHERE k = :k"), {"k": key.request_id}
        )
    return int(count or 0)


async def test_the_app_role_may_read_insert_and_delete_records_but_never_change_them(
    app: AsyncEngine,
) -> None:
    async with app.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT p, has_table_privilege(current_user, 'idempotency_records', p) "
                "FROM unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE','TRUNCATE',"
                "'REFERENCES','TRIGGER']) AS p"
            )
        )
        granted = {name for name, allowed in rows if allowed}
    assert granted == {"SELECT", "INSERT", "DELETE"}


async def test_a_retry_replays_the_stored_reply_without_a_second_effect(app: AsyncEngine) -> None:
    key = _key()
    first = await _send(app, key)
    assert await _send(app, key) == first
    assert await _effects(app, key) == 1


async def test_the_same_key_with_another_request_is_reused(app: AsyncEngine) -> None:
    key = _key()
    await _send(app, key)
    with pytest.raises(IdempotencyKeyReusedError):
        await _send(app, _key(b"to=VPY-C&amount=999", key.request_id))
    assert await _effects(app, key) == 1


async def test_the_same_key_while_the_first_transaction_is_open_is_in_use(
    app: AsyncEngine,
) -> None:
    key = _key()
    async with _Uow(app) as first:
        assert await first.idempotency.claim(key) is None
        with pytest.raises(IdempotencyKeyInUseError):
            await _send(app, key)
    # The first transaction ended without saving: the key is free and new again.
    await _send(app, key)
    assert await _effects(app, key) == 1


async def test_a_rolled_back_call_leaves_no_record(app: AsyncEngine) -> None:
    key = _key()
    async with _Uow(app) as uow:
        assert await uow.idempotency.claim(key) is None
        await uow.idempotency.save(key, CODEC.dumps(Sent("x", 1)))
    async with _Uow(app) as uow:
        assert await uow.idempotency.claim(key) is None


async def test_a_second_record_for_a_key_is_refused_by_the_primary_key(app: AsyncEngine) -> None:
    key = _key()
    async with _Uow(app) as uow:
        await uow.idempotency.save(key, b"{}")
        await uow.commit()
    with pytest.raises(IdempotencyKeyInUseError):
        async with _Uow(app) as uow:
            await uow.idempotency.save(key, b"{}")


async def test_many_concurrent_calls_with_one_key_make_exactly_one_effect(
    app: AsyncEngine,
) -> None:
    key = _key()
    outcomes = await asyncio.gather(
        *(_send(app, key, hold=0.05) for _ in range(20)), return_exceptions=True
    )
    replies = [o for o in outcomes if isinstance(o, Sent)]
    unexpected = [o for o in outcomes if not isinstance(o, Sent | IdempotencyKeyInUseError)]
    assert not unexpected
    assert replies and len(set(replies)) == 1
    assert await _effects(app, key) == 1
    assert await _send(app, key) == replies[0]


async def test_concurrent_clients_retrying_in_use_all_end_with_the_one_answer(
    app: AsyncEngine,
) -> None:
    key = _key()

    async def client() -> Sent:
        deadline = time.monotonic() + 20
        while True:
            try:
                return await _send(app, key, hold=0.02)
            except IdempotencyKeyInUseError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.01)

    replies = await asyncio.gather(*(client() for _ in range(15)))
    assert len(set(replies)) == 1
    assert await _effects(app, key) == 1


async def test_cleanup_deletes_only_records_older_than_the_cut(
    app: AsyncEngine, owner: AsyncEngine
) -> None:
    old, fresh = _key(), _key()
    for key in (old, fresh):
        await _send(app, key)
    async with owner.begin() as conn:
        await conn.execute(
            text(
                "UPDATE idempotency_records SET created_at = now() - interval '3 days' "
                "WHERE request_id = CAST(:r AS uuid)"
            ),
            {"r": old.request_id},
        )
    async with app.begin() as conn:
        deleted = await delete_expired_idempotency_records(
            conn, "transfer", datetime.now(UTC) - timedelta(days=2)
        )
    assert deleted == 1
    async with _Uow(app) as uow:
        assert await uow.idempotency.claim(old) is None
        assert await uow.idempotency.claim(fresh) is not None


async def test_the_cleanup_job_deletes_in_batches_and_keeps_a_day(
    app: AsyncEngine, owner: AsyncEngine
) -> None:
    keys = [_key() for _ in range(5)]
    for key in keys:
        await _send(app, key)
    async with owner.begin() as conn:
        await conn.execute(
            text(
                "UPDATE idempotency_records SET created_at = now() - interval '30 hours' "
                "WHERE request_id = ANY(CAST(:r AS uuid[]))"
            ),
            {"r": [k.request_id for k in keys[:3]]},
        )
    clock = _Clock(datetime.now(UTC))
    with pytest.raises(ValueError, match="24 hours"):
        await purge_expired_idempotency_records(
            app, "transfer", clock=clock, retention=timedelta(hours=1)
        )
    assert await purge_expired_idempotency_records(app, "transfer", clock=clock, batch_size=2) >= 3
    async with _Uow(app) as uow:
        claims = [await uow.idempotency.claim(k) for k in keys]
    assert [c is None for c in claims] == [True, True, True, False, False]
