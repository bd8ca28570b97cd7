"""The ledger when PostgreSQL ends its connections (pg_terminate_backend, a failover): every
call answers, moves money at most once, and a lost connection is never an unexpected error.

Found by the bank test (tests/bank): a connection terminated while it sat idle in the pool
gets its ErrorResponse before its end of file; a call that took it in between failed in
asyncpg with InternalClientError ("cannot switch to state 12; another operation (2) is in
progress"), which reached the client as INTERNAL; reads (GetTransactionByRequestId, the very
call that tells a client what became of a lost reply) answered INTERNAL on any lost
connection.

PostgreSQL ends the connections here while they sit idle in the pool, so a send fails before
its call reaches the server: the outcome is never really ambiguous. The first test removes
the pool's checkout hook (`replace_closed_at_checkout`), which would quietly replace the
connections asyncpg already saw close, so its calls meet the ended connections, read or not
by asyncpg, and it asserts that sends and lookups did fail on them (and others, on new
connections, were answered); the hook's own effect is the second test's. A commit whose reply
is lost, and a connection ended while its transaction waits, are in test_commit_outcome.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any, cast

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.transfer.conftest import TOP_UP, LedgerWorld, key
from tests.support import pooled_drivers, until_seen_ended
from vaultpay_common.db import (
    DatabaseUnavailableError,
    create_engine,
    replace_closed_at_checkout,
)
from vaultpay_common.idempotency import IdempotencyKey
from vaultpay_devstack.infra import Infra
from vaultpay_transfer.adapters.ledger_pg import PgLedger
from vaultpay_transfer.adapters.transactions_sql import SqlTransactionStore
from vaultpay_transfer.domain.errors import CommitOutcomeUnknownError
from vaultpay_transfer.domain.model import PaymentMethod, Transaction

pytestmark = pytest.mark.integration

ROUNDS = 15
SENDS = 6
_APP = "transfer-connection-loss"


async def _terminate_our_backends(infra: Infra, engine: AsyncEngine) -> int:
    """Ends the sessions of `engine`'s pool: its application name, role and database (this
    module's own, so a run sharing the server never loses its sessions to this one)."""
    conn = await asyncpg.connect(infra.postgres.admin_dsn)
    try:
        killed = await conn.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1 AND datname = $2 AND usename = $3",
            _APP,
            engine.url.database,
            engine.url.username,
        )
    finally:
        await conn.close()
    return int(killed)


async def _look_up(money: PgLedger, request: IdempotencyKey) -> None:
    """SendMoney's stored-answer lookup, which leaves the connection idle in the pool."""
    async with money.hold(request):
        pass


async def test_terminated_connections_answer_unavailable_and_move_money_at_most_once(
    ledger: LedgerWorld, infra: Infra
) -> None:
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 1_000_000)
    engine = create_engine(ledger.dbs.app_dsn("transfer"), pool_size=SENDS, application_name=_APP)
    # Without the checkout hook, a pooled connection PostgreSQL ended is handed to the next
    # call whether or not asyncpg has read its end: with it, the ones asyncpg saw close were
    # quietly replaced, and a round could pass without any call meeting a lost connection.
    event.remove(engine.sync_engine.pool, "checkout", replace_closed_at_checkout)
    money = PgLedger(engine)
    reads = SqlTransactionStore(engine)
    sent: dict[str, int] = {}
    answered: dict[str, str] = {}
    looked_up: dict[str, Transaction | None] = {}
    lost_sends: Counter[str] = Counter()
    lost_reads: Counter[str] = Counter()
    try:
        for round_ in range(ROUNDS):
            # Fill the pool, let PostgreSQL end every connection in it, then make twice as
            # many calls at once: the pool's ended connections go to half of them, new ones to
            # the others. Sends in even rounds, lookups of what earlier rounds sent in odd ones.
            keys = [key(alice.user_id, body=str(uuid.uuid4())) for _ in range(2 * SENDS)]
            await asyncio.gather(*(_look_up(money, k) for k in keys[:SENDS]))
            assert await _terminate_our_backends(infra, engine) > 0
            if round_ % 2:
                asked = list(sent)[-2 * SENDS :]
                calls = [reads.by_request_id(alice.user_id, r) for r in asked]
                found_now = await asyncio.gather(*calls, return_exceptions=True)
                for request_id, result in zip(asked, found_now, strict=True):
                    if isinstance(result, BaseException):
                        # A read commits nothing: a lost connection is plain "unavailable".
                        assert isinstance(result, DatabaseUnavailableError), repr(result)
                        lost_reads[type(result).__name__] += 1
                    else:
                        looked_up[request_id] = result
            else:
                sends = [
                    money.send_money(k, alice.user_id, bob.wallet_id, 100, "INR", "") for k in keys
                ]
                outcomes = await asyncio.gather(*sends, return_exceptions=True)
                sent.update({k.request_id: 100 for k in keys})
                for k, outcome in zip(keys, outcomes, strict=True):
                    if isinstance(outcome, BaseException):
                        # Nothing but "unavailable" may come out of a lost connection.
                        assert isinstance(
                            outcome, CommitOutcomeUnknownError | DatabaseUnavailableError
                        ), repr(outcome)
                        lost_sends[type(outcome).__name__] += 1
                    else:
                        assert outcome.code == "OK" and outcome.transaction is not None, outcome
                        answered[k.request_id] = outcome.transaction.transaction_id
        # The path was taken: sends and lookups met ended connections (and answered as
        # above), and other sends and lookups, on new connections, were answered.
        assert lost_sends and lost_reads, (lost_sends, lost_reads)
        assert answered and any(found is not None for found in looked_up.values())
        # Every send answered OK made one debit, the one it answered with; no other moved.
        rows = await ledger.fetch(
            "SELECT request_id::text AS request_id, count(*) AS n, min(id::text) AS id "
            "FROM wallet_transactions WHERE wallet_id = $1 AND category = 'P2P_SEND' "
            "GROUP BY request_id",
            alice.wallet_id,
        )
        found = {r["request_id"]: (r["n"], r["id"]) for r in rows}
        for request_id, transaction_id in answered.items():
            assert found[request_id] == (1, transaction_id)
        assert set(found) <= set(sent)
        # Every lookup that answered told the ledger's truth (the sends it asked about had all
        # returned, so the ledger has not changed for them since): the debit, or nothing.
        # And, on a healthy connection, the lookup of every request sent.
        healthy = SqlTransactionStore(ledger.engine)
        for request_id in sent:
            seen_now = await healthy.by_request_id(alice.user_id, request_id)
            if request_id in looked_up:
                assert seen_now == looked_up[request_id]
            looked_up[request_id] = seen_now
        for request_id, seen in looked_up.items():
            if seen is None:
                assert request_id not in found
            else:
                assert found[request_id] == (1, seen.transaction_id)
                assert (seen.wallet_id, seen.amount_minor) == (alice.wallet_id, 100)
        moved = sum(100 * n for n, _ in found.values())
        assert await ledger.balance(alice) == 1_000_000 - moved
        assert await ledger.balance(bob) == moved
    finally:
        await engine.dispose()


async def test_after_a_restart_connections_known_closed_cost_no_call(
    ledger: LedgerWorld, infra: Infra
) -> None:
    """What a PostgreSQL restart does to a warm pool: every idle connection ended at once.
    Once asyncpg has read their end of file (PostgreSQL may list a backend as gone a moment
    before; until then a connection still fails its one call), a burst of movements (raw
    asyncpg) and of reads (units of work) all succeed on new connections. Before the pool's checkout hook, every
    pooled connection failed the one call that took it (review of 2026-12-04), and a TopUp
    answered COMMIT_OUTCOME_UNKNOWN for a call never sent."""
    alice = await ledger.new_wallet()
    engine = create_engine(ledger.dbs.app_dsn("transfer"), pool_size=SENDS, application_name=_APP)
    money = PgLedger(engine)
    reads = SqlTransactionStore(engine)

    async def top_up() -> str:
        request = key(alice.user_id, TOP_UP, body=str(uuid.uuid4()))
        try:
            outcome = await money.top_up(
                request, alice.user_id, 100, "INR", PaymentMethod.UPI, f"upi-{uuid.uuid4()}", ""
            )
        except (CommitOutcomeUnknownError, DatabaseUnavailableError) as exc:
            return type(exc).__name__
        return outcome.code

    async def read() -> str:
        try:
            await reads.by_request_id(alice.user_id, str(uuid.uuid4()))
        except DatabaseUnavailableError as exc:
            return type(exc).__name__
        return "OK"

    async def restart() -> None:
        drivers = await pooled_drivers(engine, SENDS)  # the warm pool
        assert await _terminate_our_backends(infra, engine) == SENDS

        await until_seen_ended(drivers)

    try:
        for calls in (top_up, read):
            await restart()
            assert await asyncio.gather(*(calls() for _ in range(SENDS))) == ["OK"] * SENDS
    finally:
        await engine.dispose()


class _DeadDriver:
    """An asyncpg connection whose backend was terminated while idle: the error arrived,
    the end of file not yet."""

    def is_closed(self) -> bool:
        return False  # the end of file has not been read

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        raise asyncpg.InternalClientError(
            "cannot switch to state 12; another operation (2) is in progress"
        )


class _Raw:
    driver_connection = _DeadDriver()


class _Pooled:
    def __init__(self) -> None:
        self.invalidated = False

    async def get_raw_connection(self) -> _Raw:
        return _Raw()

    async def invalidate(self) -> None:
        self.invalidated = True

    async def close(self) -> None:
        pass


class _Engine:
    def __init__(self) -> None:
        self.handed_out: list[_Pooled] = []

    async def connect(self) -> _Pooled:
        self.handed_out.append(_Pooled())
        return self.handed_out[-1]


async def test_a_connection_broken_in_the_driver_is_an_unknown_outcome_and_is_discarded() -> None:
    engine = _Engine()
    money = PgLedger(cast(AsyncEngine, engine))
    with pytest.raises(CommitOutcomeUnknownError):
        await money.send_money(key("u1"), "u1", "VPY-AAAAAA", 100, "INR", "")
    assert engine.handed_out[0].invalidated  # never handed to the next call
