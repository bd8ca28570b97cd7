"""SendMoney's commit outcome on real PostgreSQL: "nothing answers OK before COMMIT returns; an
unknown commit outcome answers UNAVAILABLE, and GetTransactionByRequestId tells what happened".

Two real ambiguities, each made deterministic:
- the commit happened and its reply was lost: a proxy (pg_link.PgLink) between the ledger's
  engine and PostgreSQL lets the ledger call through and drops everything PostgreSQL answers
  once it has; the test sees the debit committed from another connection, then cuts the link;
- the commit did not happen: the ledger call waits on a wallet row a test session holds
  locked, and PostgreSQL ends its backend (pg_terminate_backend) while it waits.
The send goes through the real use case (MovementService: the stored-answer lookup and the
key's hold, wallet's checks, the held ledger call) with wallet's answer faked; the last test
runs it through the real transfer gRPC host (interceptors, error mapping) instead.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import asyncpg
import grpc
import pytest

from tests.integration.kyc.conftest import LocalAuth, bearer
from tests.integration.transfer.conftest import SEND, LedgerWorld, Wallet, key
from tests.integration.transfer.pg_link import PgLink
from tests.support import eventually, rpc_failure
from vaultpay.transfer.v1 import transfer_pb2, transfer_pb2_grpc
from vaultpay.type.v1 import money_pb2
from vaultpay_common.db import create_engine
from vaultpay_common.idempotency import IdempotencyKey, idempotency_lock_key
from vaultpay_devstack.infra import Infra
from vaultpay_transfer.adapters.ledger_pg import PgLedger
from vaultpay_transfer.adapters.transactions_sql import SqlTransactionStore
from vaultpay_transfer.domain.errors import CommitOutcomeUnknownError
from vaultpay_transfer.domain.model import Transaction
from vaultpay_transfer.entrypoints import bootstrap
from vaultpay_transfer.service_layer.commands import AmountInput, SendMoney
from vaultpay_transfer.service_layer.movements import MovementService
from vaultpay_transfer.service_layer.ports import IpCheck, MovementChecked
from vaultpay_transfer.settings import TransferSettings

pytestmark = pytest.mark.integration

KEY = b"pin-check-key-of-this-test-32-b!"
AMOUNT = 250
FUNDS = 1_000
UNKNOWN = "COMMIT_OUTCOME_UNKNOWN"


class _Wallet:
    """wallet's checks, passed (the PIN matched, the address is trusted). `meanwhile` runs
    inside the first check: after the stored-answer lookup, before the ledger call."""

    def __init__(self, wallet_id: str, meanwhile: Callable[[], Awaitable[None]]) -> None:
        self.wallet_id = wallet_id
        self.meanwhile: Callable[[], Awaitable[None]] | None = meanwhile
        self.checks = 0

    async def check_movement(
        self, user_id: str, pin: str, client_ip: str, check_id: str
    ) -> MovementChecked:
        self.checks += 1
        meanwhile, self.meanwhile = self.meanwhile, None
        if meanwhile is not None:
            await meanwhile()
        return MovementChecked(self.wallet_id, IpCheck(trusted=True, confirmation_sent=False))


@pytest.fixture
async def admin(infra: Infra) -> AsyncIterator[Any]:
    """A superuser session: sees every backend's locks and client port, ends backends."""
    conn = await asyncpg.connect(infra.postgres.admin_dsn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def link(ledger: LedgerWorld) -> AsyncIterator[PgLink]:
    proxy = PgLink(ledger.dbs.host, ledger.dbs.port)
    await proxy.open()
    try:
        yield proxy
    finally:
        await proxy.close()


async def _holder(admin: Any, request: IdempotencyKey) -> int:
    """The backend holding the request's advisory lock (the movement's connection)."""
    pids = await admin.fetch(
        "SELECT DISTINCT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND ((classid::bigint << 32) | objid::bigint) = $1",
        idempotency_lock_key(request),
    )
    assert len(pids) == 1, pids
    return int(pids[0]["pid"])


def _losing_the_reply(
    link: PgLink, admin: Any, request: IdempotencyKey
) -> Callable[[], Awaitable[None]]:
    """Arms the proxy on the movement's connection (idle between the lookup and the ledger
    call): PostgreSQL's answer to the next statement on it never reaches the client."""

    async def arm() -> None:
        pipe = await link.pipe_of(admin, await _holder(admin, request))
        pipe.swallow_replies_after_next_execute()

    return arm


def _cut_after_execute(link: PgLink) -> None:
    [pipe] = [p for p in link.pipes if p.executed.is_set()]
    assert pipe.swallowed > 0  # PostgreSQL answered; the client was told nothing
    pipe.cut()


async def _movements(ledger: LedgerWorld, request_id: str) -> list[Any]:
    """The ledger's rows of a request: the sender's (which carry the request_id) and those of
    the same ledger transactions (a send's credit)."""
    return await ledger.fetch(
        "SELECT id::text AS id, wallet_id, category, amount FROM wallet_transactions"
        " WHERE ledger_transaction_id IN (SELECT ledger_transaction_id FROM wallet_transactions"
        " WHERE request_id = $1::uuid) ORDER BY category",
        request_id,
    )


async def _debit(ledger: LedgerWorld, sender: Wallet, request_id: str) -> Any:
    """The committed debit of the request, as another connection sees it (None: not yet)."""
    rows = await ledger.fetch(
        "SELECT id::text AS id, amount FROM wallet_transactions"
        " WHERE request_id = $1::uuid AND wallet_id = $2 AND category = 'P2P_SEND'",
        request_id,
        sender.wallet_id,
    )
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


async def _moved_once(
    ledger: LedgerWorld, alice: Wallet, bob: Wallet, request_id: str, answered: Transaction
) -> None:
    """The request made one debit (the one answered) and one credit, and the balances moved
    by one send."""
    rows = await _movements(ledger, request_id)
    assert [(r["wallet_id"], r["category"]) for r in rows] == [
        (bob.wallet_id, "P2P_RECEIVE"),
        (alice.wallet_id, "P2P_SEND"),
    ], rows
    assert rows[1]["id"] == answered.transaction_id
    assert answered.amount_minor == AMOUNT
    assert await ledger.balance(alice) == FUNDS - AMOUNT
    assert await ledger.balance(bob) == AMOUNT


async def _pair(ledger: LedgerWorld) -> tuple[Wallet, Wallet]:
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, FUNDS)
    return alice, bob


def _send(alice: Wallet, bob: Wallet) -> tuple[SendMoney, IdempotencyKey]:
    """The send and its key."""
    sent = key(alice.user_id, SEND, body=f"{bob.wallet_id} {AMOUNT}")
    return SendMoney(
        alice.user_id,
        sent,
        bob.wallet_id,
        AmountInput("INR", AMOUNT),
        "",
        "1234",
        "203.0.113.7",
    ), sent


def _through(link: PgLink, ledger: LedgerWorld) -> str:
    """transfer's DSN by way of the link, without TLS: the link reads the client's messages
    as they go (a server that offers TLS would otherwise get a ciphertext stream)."""
    dsn = replace(ledger.dbs, port=link.port).app_dsn("transfer")
    return dsn + ("&" if "?" in dsn else "?") + "ssl=disable"


async def test_a_commit_whose_reply_is_lost_is_unknown_and_the_lookup_tells_it_happened(
    ledger: LedgerWorld, link: PgLink, admin: Any
) -> None:
    """PostgreSQL commits the send; its reply is dropped; the link is cut.

    Why this fails if the property breaks: the debit is seen committed (from another
    connection) while the send is still waiting, so the send cannot have been answered from
    the commit's reply; it must end in CommitOutcomeUnknownError (reason
    COMMIT_OUTCOME_UNKNOWN). An adapter that answered OK without the reply, or told a definite
    failure (a refusal, INTERNAL, or DATABASE_UNAVAILABLE, which says nothing happened and
    would make a client that trusts it send again under a new request_id) fails the
    `pytest.raises`. `assert not sending.done()` and `swallowed > 0` prove the proxy really
    withheld a reply that PostgreSQL sent. Then the lookup must return exactly the committed
    debit, the balances must have moved once, and the retry must replay it (wallet not asked
    again, nothing moved again).
    """
    alice, bob = await _pair(ledger)
    send, sent = _send(alice, bob)
    rid = sent.request_id
    engine = create_engine(
        _through(link, ledger),
        pool_size=2,
        application_name="transfer-reply-lost",
    )
    try:
        wallet = _Wallet(alice.wallet_id, _losing_the_reply(link, admin, sent))
        service = MovementService(
            PgLedger(engine), wallet, str, max_amount_minor=10**12, pin_check_key=KEY
        )
        sending = asyncio.ensure_future(service.send_money(send))
        committed = await eventually(lambda: _debit(ledger, alice, rid), what="the send committed")
        assert not sending.done(), "the send answered without the commit's reply"
        _cut_after_execute(link)
        with pytest.raises(CommitOutcomeUnknownError) as lost:
            await sending
        assert lost.value.reason == UNKNOWN

        found = await SqlTransactionStore(ledger.engine).by_request_id(alice.user_id, rid)
        assert found is not None and found.transaction_id == committed["id"]
        await _moved_once(ledger, alice, bob, rid, found)

        again = await service.send_money(send)  # the client's retry, same request_id
        assert again == found
        assert wallet.checks == 1  # replayed from the stored answer, PIN not asked again
        await _moved_once(ledger, alice, bob, rid, again)
    finally:
        await engine.dispose()


async def test_a_connection_ended_before_the_commit_is_unknown_and_the_retry_moves_once(
    ledger: LedgerWorld, admin: Any
) -> None:
    """The ledger call waits on alice's wallet row (a test session holds it FOR UPDATE) and
    PostgreSQL ends its backend meanwhile: the transaction never committed.

    The answer is still COMMIT_OUTCOME_UNKNOWN, and rightly: the client cannot tell this from
    the lost reply above. asyncpg reports a FATAL admin_shutdown (57P01) here, and that FATAL
    does not prove a rollback either: a backend terminated while it waits for a synchronous
    standby after its local commit says the same ("the transaction has already committed
    locally"); a failover looks like a closed socket whenever it happens. A send that
    answered OK here would have lied (nothing moved, checked below); a definite refusal would
    be wrong in the other case. Then the lookup says nothing happened, nothing moved, and the
    retry with the same request_id moves the money exactly once.
    """
    alice, bob = await _pair(ledger)
    send, sent = _send(alice, bob)
    rid = sent.request_id
    engine = create_engine(
        ledger.dbs.app_dsn("transfer"), pool_size=2, application_name="transfer-ended"
    )
    locker = await ledger.owner()
    try:
        service = MovementService(
            PgLedger(engine),
            _Wallet(alice.wallet_id, lambda: asyncio.sleep(0)),
            str,
            max_amount_minor=10**12,
            pin_check_key=KEY,
        )
        locking = locker.transaction()
        await locking.start()
        await locker.execute("SELECT 1 FROM wallets WHERE id = $1 FOR UPDATE", alice.wallet_id)
        locker_pid = await locker.fetchval("SELECT pg_backend_pid()")
        sending = asyncio.ensure_future(service.send_money(send))

        async def blocked() -> int | None:
            pid = await admin.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                locker_pid,
            )
            return None if pid is None else int(pid)

        pid = await eventually(blocked, what="the ledger call waiting on the wallet row")
        assert pid == await _holder(admin, sent)  # it is the send's ledger call
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(CommitOutcomeUnknownError) as lost:
            await sending
        assert lost.value.reason == UNKNOWN
        await locking.rollback()

        reads = SqlTransactionStore(ledger.engine)
        assert await reads.by_request_id(alice.user_id, rid) is None
        assert await _movements(ledger, rid) == []
        assert await ledger.balance(alice) == FUNDS
        assert await ledger.balance(bob) == 0

        async def gone() -> bool:
            alive = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid
            )
            return not alive

        await eventually(gone, what="the ended backend gone (and the key's lock with it)")
        debit = await service.send_money(send)
        assert await reads.by_request_id(alice.user_id, rid) == debit
        await _moved_once(ledger, alice, bob, rid, debit)
        assert await service.send_money(send) == debit  # and it stays once
        await _moved_once(ledger, alice, bob, rid, debit)
    finally:
        await locker.close()
        await engine.dispose()


@pytest.fixture
async def host_through_link(
    ledger: LedgerWorld, link: PgLink, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Any, LocalAuth, list[_Wallet]]]:
    """The real transfer gRPC host, its database reached through `link`, wallet's checks
    faked (the gate the host builds is replaced; `gates` gets it, to set its `meanwhile`)."""
    gates: list[_Wallet] = []

    def gate(*_: Any) -> _Wallet:
        gates.append(_Wallet("", lambda: asyncio.sleep(0)))
        return gates[-1]

    monkeypatch.setattr(bootstrap, "GrpcWalletGate", gate)
    fields: dict[str, Any] = {
        k.removeprefix("TRANSFER_").lower(): v
        for k, v in ledger.env.items()
        if k != "TRANSFER_DATABASE_CHAIN_ROLES"
    }
    fields["database_url"] = _through(link, ledger)
    auth = LocalAuth("transfer")
    host = await bootstrap.build_host(TransferSettings(**fields), auth=auth)
    port = await host.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield transfer_pb2_grpc.TransferServiceStub(channel), auth, gates
    finally:
        await channel.close()
        await host.stop()


async def test_send_money_answers_unavailable_commit_outcome_unknown_over_grpc(
    ledger: LedgerWorld,
    link: PgLink,
    admin: Any,
    host_through_link: tuple[Any, LocalAuth, list[_Wallet]],
) -> None:
    """The first test's lost reply, through the transfer gRPC host: SendMoney answers
    UNAVAILABLE with ErrorInfo reason COMMIT_OUTCOME_UNKNOWN (the error mapping of the real
    host), GetTransactionByRequestId answers the committed debit, and the retried SendMoney
    answers OK with that same transaction. Fails if the host answered OK (it had no reply to
    answer from: the debit was seen committed while the call still waited), or any other code
    or reason (INTERNAL, DATABASE_UNAVAILABLE...)."""
    transfer, auth, gates = host_through_link
    alice, bob = await _pair(ledger)
    rid = str(uuid.uuid4())
    [gate] = gates
    gate.wallet_id = alice.wallet_id
    gate.meanwhile = _losing_the_reply(link, admin, key(alice.user_id, SEND, request_id=rid))
    request = transfer_pb2.SendMoneyRequest(
        request_id=rid,
        recipient_wallet_id=bob.wallet_id,
        amount=money_pb2.Money(currency_code="INR", amount_minor=AMOUNT),
        pin="1234",
    )
    metadata = bearer(auth.user_token(alice.user_id))

    async def send() -> Any:
        return await transfer.SendMoney(request, metadata=metadata, timeout=30)

    sending = asyncio.ensure_future(send())
    committed = await eventually(lambda: _debit(ledger, alice, rid), what="the send committed")
    assert not sending.done(), "SendMoney answered without the commit's reply"
    _cut_after_execute(link)
    failure = await rpc_failure(sending)
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, UNKNOWN), failure

    looked_up = await transfer.GetTransactionByRequestId(
        transfer_pb2.GetTransactionByRequestIdRequest(request_id=rid),
        metadata=metadata,
        timeout=30,
    )
    assert looked_up.transaction.transaction_id == committed["id"]
    assert looked_up.transaction.amount.amount_minor == AMOUNT
    again = await transfer.SendMoney(request, metadata=metadata, timeout=30)
    assert again.transaction == looked_up.transaction
    assert gate.checks == 1
    rows = await _movements(ledger, rid)
    assert [r["category"] for r in rows] == ["P2P_RECEIVE", "P2P_SEND"], rows
    assert await ledger.balance(alice) == FUNDS - AMOUNT
    assert await ledger.balance(bob) == AMOUNT
