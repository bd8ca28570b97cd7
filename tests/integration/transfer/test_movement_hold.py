"""A PIN-checked movement's key held from its stored-answer lookup to its COMMIT (transfer
t0005), on real PostgreSQL, across two "transfer processes" (two engines, two pools).

The story it closes: the first attempt of a send waits at wallet; its retry reaches another
transfer process, which must not run it (it could be refused for the balance and the first
attempt commit afterwards, against the answer the client kept).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.fakes.transfer import FakeWalletGate
from tests.integration.transfer.conftest import (
    SEND,
    WITHDRAW,
    LedgerWorld,
    Wallet,
    key,
    plain_dsn,
)
from tests.support import pooled_drivers, until_seen_ended
from vaultpay_common.db import (
    DatabaseUnavailableError,
    create_engine,
    replace_closed_at_checkout,
)
from vaultpay_common.idempotency import (
    IdempotencyKey,
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    idempotency_lock_key,
)
from vaultpay_devstack.infra import Infra
from vaultpay_transfer.adapters.ledger_pg import PgLedger
from vaultpay_transfer.domain.errors import CommitOutcomeUnknownError
from vaultpay_transfer.domain.model import TransactionStatus
from vaultpay_transfer.service_layer.commands import AmountInput, SendMoney
from vaultpay_transfer.service_layer.movements import MovementService
from vaultpay_transfer.service_layer.ports import HeldMovement

HOME = "203.0.113.7"
KEY = b"pin-check-key-of-this-test-32-b!"


@pytest.fixture
async def other_process(ledger: LedgerWorld) -> AsyncIterator[PgLedger]:
    """A second transfer process's ledger: its own engine and pool, the same database."""
    engine = create_engine(ledger.dbs.app_dsn("transfer"), pool_size=5, application_name="test-2")
    try:
        yield PgLedger(engine)
    finally:
        await engine.dispose()


async def _end_sessions(
    infra: Infra, engine: AsyncEngine, application_name: str, within: float = 10.0
) -> None:
    """PostgreSQL ends the sessions of `engine` named `application_name` (a failover, an
    operator), and they are gone when this returns. Only the sessions of the engine's role on
    its database (this module's own), so a run sharing the server keeps its sessions."""
    ours = "application_name = $1 AND datname = $2 AND usename = $3"
    args = (application_name, engine.url.database, engine.url.username)
    admin = await asyncpg.connect(infra.postgres.admin_dsn)
    try:
        await admin.execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {ours}",
            *args,
        )
        deadline = time.monotonic() + within
        while await admin.fetchval(
            f"SELECT count(*) FROM pg_stat_activity WHERE {ours}",
            *args,
        ):
            assert time.monotonic() < deadline, "the sessions outlived their termination"
            await asyncio.sleep(0.02)
    finally:
        await admin.close()


async def _funded_pair(ledger: LedgerWorld, amount: int) -> tuple[Wallet, Wallet]:
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, amount)
    return alice, bob


async def _send_held(
    money: PgLedger, request: IdempotencyKey, sender: Wallet, recipient: Wallet
) -> None:
    """A send of 100 through a hold of `request` with nothing stored: it commits."""
    async with money.hold(request) as held:
        assert held.stored is None
        outcome = await held.send_money(sender.user_id, recipient.wallet_id, 100, "INR", "")
    assert outcome.code == "OK"


async def test_a_retry_that_another_process_serves_while_the_first_is_at_wallet_is_in_use(
    ledger: LedgerWorld, other_process: PgLedger
) -> None:
    alice, bob = await _funded_pair(ledger, 1_000)
    at_wallet, release = asyncio.Event(), asyncio.Event()
    slow = FakeWalletGate(pins={alice.user_id: "1234"}, wallet_ids={alice.user_id: alice.wallet_id})
    slow.trusted_ips[alice.user_id] = {HOME}
    verify = slow.verify_pin

    async def waits_at_wallet(user_id: str, pin: str, check_id: str) -> str:
        at_wallet.set()
        await release.wait()
        return await verify(user_id, pin, check_id)

    slow.verify_pin = waits_at_wallet  # type: ignore[method-assign]
    fast = FakeWalletGate(pins=dict(slow.pins), wallet_ids=dict(slow.wallet_ids))
    fast.trusted_ips[alice.user_id] = {HOME}
    first = MovementService(ledger.ledger, slow, str, max_amount_minor=10**12, pin_check_key=KEY)
    second = MovementService(other_process, fast, str, max_amount_minor=10**12, pin_check_key=KEY)
    sent = key(alice.user_id)
    send = SendMoney(alice.user_id, sent, bob.wallet_id, AmountInput("INR", 600), "", "1234", HOME)
    running = asyncio.ensure_future(first.send_money(send))
    await at_wallet.wait()
    # Run now, the retry could be refused (for the balance, say) and the first attempt
    # commit afterwards, against the answer the client kept: it is not run.
    with pytest.raises(IdempotencyKeyInUseError):
        await second.send_money(send)
    release.set()
    debit = await running
    assert debit.amount_minor == 600
    assert await second.send_money(send) == debit  # the other process replays the answer
    assert await ledger.balance(alice) == 400
    assert await ledger.key_is_free(sent)


async def test_the_commit_frees_the_key_and_a_stored_answer_holds_nothing(
    ledger: LedgerWorld, other_process: PgLedger
) -> None:
    alice, bob = await _funded_pair(ledger, 1_000)
    request = key(alice.user_id, body="bob 250")
    async with ledger.ledger.hold(request) as held:
        assert held.stored is None
        assert not await ledger.key_is_free(request, within=0)
        outcome = await held.send_money(alice.user_id, bob.wallet_id, 250, "INR", "")
        assert outcome.code == "OK" and outcome.transaction is not None
        assert await ledger.key_is_free(request, within=0)  # before the block even ends
    async with other_process.hold(request) as again:
        assert again.stored == outcome.transaction
        assert await ledger.key_is_free(request, within=0)
    with pytest.raises(IdempotencyKeyReusedError):
        async with other_process.hold(key(alice.user_id, request_id=request.request_id)):
            pass


async def test_a_movement_that_ends_before_its_ledger_call_frees_the_key(
    ledger: LedgerWorld,
) -> None:
    alice, _ = await _funded_pair(ledger, 1_000)
    request = key(alice.user_id)
    with pytest.raises(LookupError):  # wallet refused the PIN, say
        async with ledger.ledger.hold(request):
            raise LookupError("refused before the ledger")
    assert await ledger.key_is_free(request, within=0)

    async def stalls() -> None:
        async with ledger.ledger.hold(request):
            await asyncio.Event().wait()

    stalled = asyncio.ensure_future(stalls())
    deadline = time.monotonic() + 10
    while await ledger.key_is_free(request, within=0):
        assert time.monotonic() < deadline, "the stalled movement never held its key"
        await asyncio.sleep(0.02)
    stalled.cancel()  # the client went away
    with pytest.raises(asyncio.CancelledError):
        await stalled
    assert await ledger.key_is_free(request)


async def test_a_withdrawal_runs_held_and_frees_its_key(ledger: LedgerWorld) -> None:
    alice, _ = await _funded_pair(ledger, 1_000)
    request = key(alice.user_id, WITHDRAW)
    async with ledger.ledger.hold(request) as held:
        outcome = await held.withdraw(
            alice.user_id, 300, "INR", "HDFC0001234", "····9012", "b" * 64, "Account Holder"
        )
    assert outcome.code == "OK" and outcome.transaction is not None
    assert outcome.transaction.status is TransactionStatus.PENDING
    assert await ledger.balance(alice) == 700
    assert await ledger.key_is_free(request, within=0)


async def test_the_held_functions_refuse_a_caller_that_does_not_hold_the_key(
    ledger: LedgerWorld,
) -> None:
    """So a held call can never run unprotected, and writes nothing when refused."""
    alice, bob = await _funded_pair(ledger, 1_000)
    request = key(alice.user_id, SEND)
    args: list[Any] = [
        request.caller,
        request.method,
        request.request_id,
        request.fingerprint,
        idempotency_lock_key(request),
        alice.user_id,
        bob.wallet_id,
        100,
        "INR",
        "",
    ]
    conn = await asyncpg.connect(plain_dsn(ledger.dbs.app_dsn("transfer")))
    try:
        with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError):
            await conn.fetch(
                "SELECT * FROM transfer_send_money_held($1, $2, $3::uuid, $4, $5, $6, $7, $8,"
                " $9, $10)",
                *args,
            )
    finally:
        await conn.close()
    assert await ledger.balance(alice) == 1_000


async def test_a_pooled_connection_ended_while_idle_is_replaced_before_the_lookup(
    ledger: LedgerWorld, infra: Infra
) -> None:
    """PostgreSQL ended the pooled connection while it sat idle (a restart, a failover): the
    pool hands out a new one (the driver had read its end), so the movement just runs."""
    alice, bob = await _funded_pair(ledger, 1_000)
    name = "transfer-hold-replaced"
    engine = create_engine(ledger.dbs.app_dsn("transfer"), pool_size=1, application_name=name)
    money = PgLedger(engine)
    request = key(alice.user_id)
    try:
        drivers = await pooled_drivers(engine, 1)  # the pool's one connection, idle
        await _end_sessions(infra, engine, name)

        await until_seen_ended(drivers)
        await _send_held(money, request, alice, bob)
    finally:
        await engine.dispose()
    assert await ledger.key_is_free(request)


async def test_a_connection_lost_under_the_lookup_is_unavailable_and_holds_nothing(
    ledger: LedgerWorld, infra: Infra
) -> None:
    """A pooled connection PostgreSQL ended is handed out anyway (the checkout hook removed,
    as for a connection whose end the driver has not read yet): the lookup answers
    UNAVAILABLE (it committed nothing), the connection is gone, and the retry runs."""
    alice, bob = await _funded_pair(ledger, 1_000)
    name = "transfer-hold-loss"
    engine = create_engine(ledger.dbs.app_dsn("transfer"), pool_size=1, application_name=name)
    event.remove(engine.sync_engine.pool, "checkout", replace_closed_at_checkout)
    lost = PgLedger(engine)
    request = key(alice.user_id)
    try:
        async with lost.hold(key(alice.user_id)):  # the pool's one connection, now idle
            pass
        await _end_sessions(infra, engine, name)
        with pytest.raises(DatabaseUnavailableError):
            async with lost.hold(request):
                pytest.fail("the lookup on a lost connection answered")
        await _send_held(lost, request, alice, bob)
    finally:
        await engine.dispose()
    assert await ledger.key_is_free(request)


async def test_a_connection_lost_while_at_wallet_keeps_the_movements_own_answer(
    ledger: LedgerWorld, infra: Infra
) -> None:
    """The movement ends without its ledger call (wallet unavailable, say) on a connection
    PostgreSQL has ended meanwhile: the unlock cannot be sent, the connection is discarded,
    and the answer is still the movement's own, not the lost connection's."""
    alice, bob = await _funded_pair(ledger, 1_000)
    name = "transfer-hold-loss-at-wallet"
    engine = create_engine(ledger.dbs.app_dsn("transfer"), pool_size=1, application_name=name)
    lost = PgLedger(engine)
    request = key(alice.user_id)

    async def wallet_unavailable_meanwhile() -> None:
        async with lost.hold(request):
            await _end_sessions(infra, engine, name)
            raise LookupError("wallet unavailable")

    try:
        with pytest.raises(LookupError, match="wallet unavailable"):
            await wallet_unavailable_meanwhile()
        assert await ledger.key_is_free(request)
        async with lost.hold(request) as held:  # the retry, on a new connection
            outcome = await held.send_money(alice.user_id, bob.wallet_id, 100, "INR", "")
        assert outcome.code == "OK"
    finally:
        await engine.dispose()


async def test_a_pool_held_up_by_movements_at_wallet_answers_unavailable(
    ledger: LedgerWorld,
) -> None:
    """Every pooled connection is held by a movement waiting at wallet: the next movement
    waits for one for the pool's timeout, then is UNAVAILABLE (retryable), not INTERNAL."""
    engine = create_async_engine(
        ledger.dbs.app_dsn("transfer"), pool_size=1, max_overflow=0, pool_timeout=0.2
    )
    busy = PgLedger(engine)
    alice = await ledger.new_wallet()
    try:
        async with busy.hold(key(alice.user_id)):
            with pytest.raises(DatabaseUnavailableError):
                await _enter(busy.hold(key(alice.user_id)))
    finally:
        await engine.dispose()


async def _enter(hold: AbstractAsyncContextManager[HeldMovement]) -> None:
    async with hold:
        pytest.fail("a movement got a connection from an exhausted pool")


async def test_a_holder_idle_past_its_bound_loses_the_key_and_moves_nothing(
    ledger: LedgerWorld, other_process: PgLedger
) -> None:
    """A transfer process paused while a movement waits at wallet (SIGSTOP, a paused
    container: its socket still answers the keepalives) held the key until it resumed.
    PostgreSQL now ends a holding session idle past the hold's bound: a retry elsewhere runs,
    and the paused movement, resumed, finds its connection gone and moves nothing."""
    alice, bob = await _funded_pair(ledger, 1_000)
    name = "transfer-hold-paused"
    engine = create_engine(ledger.dbs.app_dsn("transfer"), pool_size=1, application_name=name)
    paused = PgLedger(engine, hold_idle_timeout=1)
    request = key(alice.user_id)
    holding, resume = asyncio.Event(), asyncio.Event()

    async def pauses_at_wallet() -> None:
        async with paused.hold(request) as held:
            holding.set()
            await resume.wait()  # the process does nothing: its session sits idle
            await held.send_money(alice.user_id, bob.wallet_id, 100, "INR", "")

    stalled = asyncio.ensure_future(pauses_at_wallet())
    try:
        await holding.wait()
        assert not await ledger.key_is_free(request, within=0)
        assert await ledger.key_is_free(request, within=30), "the idle holder kept the key"
        await _send_held(other_process, request, alice, bob)  # the retry, in another process
        resume.set()
        with pytest.raises((DatabaseUnavailableError, CommitOutcomeUnknownError)):
            await stalled
    finally:
        stalled.cancel()
        await engine.dispose()
    assert await ledger.balance(alice) == 900  # the retry's 100, once


async def test_a_session_that_let_go_of_the_key_has_its_own_idle_setting_back(
    ledger: LedgerWorld,
) -> None:
    """The bound is the holding session's only while it holds: after a ledger call, an
    unlock or a stored answer, the pooled connection is as PostgreSQL set it up (not ended
    the next time it sits idle for a second)."""
    alice, bob = await _funded_pair(ledger, 1_000)
    engine = create_engine(ledger.dbs.app_dsn("transfer"), pool_size=1, application_name="t-idle")
    money = PgLedger(engine, hold_idle_timeout=1)

    async def pooled_setting() -> str:
        async with engine.connect() as conn:
            return str((await conn.exec_driver_sql("SHOW idle_session_timeout")).scalar_one())

    try:
        default = await pooled_setting()
        request = key(alice.user_id)
        async with money.hold(request) as held:
            assert await _setting_of(held) == "1s"
            await held.send_money(alice.user_id, bob.wallet_id, 100, "INR", "")
        assert await pooled_setting() == default
        async with money.hold(request) as again:  # its stored answer: nothing held
            assert again.stored is not None
            assert await _setting_of(again) == default
        seen: list[str] = []
        with pytest.raises(LookupError):
            await _refused_at_wallet(money.hold(key(alice.user_id)), seen)
        assert seen == ["1s"]
        assert await pooled_setting() == default
    finally:
        await engine.dispose()


async def _setting_of(held: HeldMovement) -> str:
    driver = held._driver  # type: ignore[attr-defined]
    return str(await driver.fetchval("SHOW idle_session_timeout"))


async def _refused_at_wallet(
    hold: AbstractAsyncContextManager[HeldMovement], seen: list[str]
) -> None:
    async with hold as held:
        seen.append(await _setting_of(held))
        raise LookupError("wallet refused the PIN")


async def test_a_refused_retrys_lookup_sees_an_attempt_still_holding_the_key(
    ledger: LedgerWorld, other_process: PgLedger
) -> None:
    """Review of 2026-12-05: a retry refused by its input checks (sent without its PIN, or
    after a bound was lowered) looked only for a stored answer, and was told a definite 400
    while its first attempt held the key (at wallet, or its ledger call still running) and
    could still commit. While the key is held the lookup answers IDEMPOTENCY_KEY_IN_USE."""
    alice, bob = await _funded_pair(ledger, 1_000)
    request = key(alice.user_id, body="bob 300")
    async with ledger.ledger.hold(request) as held:
        assert held.stored is None
        with pytest.raises(IdempotencyKeyInUseError):
            await other_process.stored_answer(request)
        outcome = await held.send_money(alice.user_id, bob.wallet_id, 300, "INR", "")
        assert outcome.code == "OK"
    assert await other_process.stored_answer(request) == outcome.transaction
    never_used = key(alice.user_id, body="bob 5")
    assert await other_process.stored_answer(never_used) is None  # nobody holds it
