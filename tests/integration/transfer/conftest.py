"""The ledger on real PostgreSQL: the wallet and transfer migrations applied by the real
`vaultpay-transfer migrate` (each chain granting to its service's own role), transfer's engine,
and helpers that make wallets the way wallet does (rows with a zero balance, tiers, freezes
through wallet's own repository, as wallet's role).
One database per test module.

    async def test_x(ledger: LedgerWorld) -> None:
        alice = await ledger.new_wallet()
        await ledger.fund(alice, 50_000)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes.transfer import FakeWalletGate
from tests.support import eventually
from vaultpay_common.db import create_engine
from vaultpay_common.errors import ErrorKind
from vaultpay_common.idempotency import (
    IdempotencyKey,
    IdempotencyKeyInUseError,
    idempotency_lock_key,
    request_fingerprint,
)
from vaultpay_common.migrations import migrate_chain
from vaultpay_devstack.postgres import Provisioned
from vaultpay_transfer.adapters.ledger_pg import PgLedger
from vaultpay_transfer.adapters.verify_sql import SqlLedgerAuditor
from vaultpay_transfer.domain.model import PaymentMethod, Transaction
from vaultpay_transfer.domain.outcomes import LedgerOutcome
from vaultpay_transfer.entrypoints.cli import TRANSFER_CHAIN
from vaultpay_transfer.service_layer.movements import MovementService
from vaultpay_wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from vaultpay_wallet.domain.model import Freeze, FreezeSource

SEND = "/vaultpay.transfer.v1.TransferService/SendMoney"
TOP_UP = "/vaultpay.transfer.v1.TransferService/TopUp"
WITHDRAW = "/vaultpay.transfer.v1.TransferService/Withdraw"
HOME = "203.0.113.7"  # the client address wallet_gate trusts
PIN_KEY = b"pin-check-key-of-this-test-32-b!"
# The transfer chain's last revision: where `vaultpay-transfer migrate` leaves a database.
TRANSFER_HEAD = "t0028"


def plain_dsn(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://")


def transfer_env(dbs: Provisioned, redis_url: str) -> dict[str, str]:
    return {
        "TRANSFER_DATABASE_URL": dbs.app_dsn("transfer"),
        "TRANSFER_MIGRATION_DATABASE_URL": dbs.vaultpay_owner_dsn,
        "TRANSFER_DATABASE_APP_ROLE": dbs.app_role("transfer"),
        "TRANSFER_DATABASE_CHAIN_ROLES": json.dumps(dbs.chain_roles()),
        "TRANSFER_REDIS_URL": redis_url,
        "TRANSFER_KEY_ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "TRANSFER_AUDIT_CHAIN_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "TRANSFER_SERVICE_CLIENT_ID": "transfer",
        "TRANSFER_SERVICE_CLIENT_SECRET": "unused-in-these-tests",
        "TRANSFER_GRPC_ADDRESS": "127.0.0.1:0",
        "TRANSFER_OUTBOX_POLL_SECONDS": "0.1",
        "TRANSFER_PAYOUT_INTERVAL_SECONDS": "0.1",
        "TRANSFER_SHUTDOWN_GRACE_SECONDS": "0.5",
        "TRANSFER_LOG_LEVEL": "WARNING",
    }


def run_transfer_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vaultpay_transfer.entrypoints.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def key(
    user_id: str, method: str = SEND, request_id: str | None = None, body: str = ""
) -> IdempotencyKey:
    """The idempotency key of a call; `body` stands for the request's other fields."""
    return IdempotencyKey(
        caller=user_id,
        method=method,
        request_id=request_id or str(uuid.uuid4()),
        fingerprint=request_fingerprint(body.encode()),
    )


@dataclass
class Wallet:
    wallet_id: str
    user_id: str


@dataclass
class LedgerWorld:
    dbs: Provisioned
    env: dict[str, str]
    engine: AsyncEngine  # transfer's role
    ledger: PgLedger
    wallet_engine: AsyncEngine  # wallet's role

    async def owner(self) -> Any:
        return await asyncpg.connect(plain_dsn(self.dbs.vaultpay_owner_dsn))

    async def key_is_free(self, key: IdempotencyKey, within: float = 10.0) -> bool:
        """Whether a session of its own can take the key's lock (polled: a discarded
        connection's session ends a moment after the pool lets it go). Never the ledger's
        pool: a session may take again an advisory lock it holds itself."""
        deadline = time.monotonic() + within
        conn = await self.owner()
        try:
            while True:
                if await conn.fetchval(
                    "SELECT pg_try_advisory_lock($1)", idempotency_lock_key(key)
                ):
                    await conn.execute("SELECT pg_advisory_unlock($1)", idempotency_lock_key(key))
                    return True
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.02)
        finally:
            await conn.close()

    async def migrate(self, action: Literal["upgrade", "downgrade"], revision: str) -> None:
        """transfer's migration chain up or down to `revision` ("head"), as the owner runs it
        (in a thread: Alembic is synchronous)."""
        await asyncio.to_thread(
            migrate_chain,
            TRANSFER_CHAIN,
            self.dbs.vaultpay_owner_dsn,
            self.dbs.app_role("transfer"),
            shared_role=self.dbs.vaultpay_app_role,
            action=action,
            revision=revision,
        )

    async def new_wallet(
        self, *, tier: str = "FULL", currency: str = "INR", name: str = "Test Person"
    ) -> Wallet:
        wallet = Wallet(f"VPY-{secrets.token_hex(3).upper()}", str(uuid.uuid4()))
        now = datetime.now(UTC)
        conn = await self.owner()
        try:
            await conn.execute(
                "INSERT INTO wallets (id, user_id, display_name, currency, balance, status,"
                " kyc_tier, created_at, updated_at) VALUES ($1, $2, $3, $4, 0, 'ACTIVE', $5,"
                " $6, $6)",
                wallet.wallet_id,
                wallet.user_id,
                name,
                currency,
                tier,
                now,
            )
        finally:
            await conn.close()
        return wallet

    async def set_limit(
        self,
        wallet: Wallet,
        action: str,
        *,
        source: str = "ADMIN_OVERRIDE",
        per_transaction: int | None = None,
        daily: int | None = None,
        monthly: int | None = None,
    ) -> None:
        conn = await self.owner()
        try:
            await conn.execute(
                "INSERT INTO wallet_limit_overrides (wallet_id, source, action, per_transaction,"
                " daily, monthly, set_by, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'test',"
                " now()) ON CONFLICT (wallet_id, source, action) DO UPDATE SET"
                " per_transaction = $4, daily = $5, monthly = $6",
                wallet.wallet_id,
                source,
                action,
                per_transaction,
                daily,
                monthly,
            )
        finally:
            await conn.close()

    async def fund(self, wallet: Wallet, amount: int) -> Transaction:
        outcome = await self.ledger.top_up(
            key(wallet.user_id, TOP_UP),
            wallet.user_id,
            amount,
            "INR",
            PaymentMethod.UPI,
            f"upi-{uuid.uuid4().hex}",
            "UPI test",
        )
        assert outcome.code == "OK", outcome
        assert outcome.transaction is not None
        return outcome.transaction

    async def send(self, sender: Wallet, recipient: Wallet, amount: int) -> Transaction:
        """A send the ledger accepts (its own request_id, no note); the sender's side."""
        outcome = await self.ledger.send_money(
            key(sender.user_id, request_id=str(uuid.uuid4())),
            sender.user_id,
            recipient.wallet_id,
            amount,
            "INR",
            "",
        )
        assert outcome.code == "OK", outcome
        assert outcome.transaction is not None
        return outcome.transaction

    async def withdraw(
        self,
        wallet: Wallet,
        amount: int,
        *,
        request: IdempotencyKey | None = None,
        account_hash: str = "b" * 64,
    ) -> LedgerOutcome:
        """A withdrawal to the tests' bank account (HDFC0001234, ····9012), as Withdraw asks
        the ledger for it; the outcome as the ledger answers it, refusals included."""
        return await self.ledger.withdraw(
            request or key(wallet.user_id, WITHDRAW),
            wallet.user_id,
            amount,
            "INR",
            "HDFC0001234",
            "····9012",
            account_hash,
            "Account Holder",
        )

    async def freeze(
        self,
        wallet: Wallet,
        source: FreezeSource = FreezeSource.ADMIN,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> None:
        """Freezes the wallet exactly as wallet's use cases do (its repository, its rules)."""
        async with SqlWalletUnitOfWork(self.wallet_engine) as uow:
            current = await uow.wallets.get(wallet.wallet_id, for_update=True)
            assert current is not None
            now = datetime.now(UTC)
            freeze = Freeze(source, "test", since or now, until)
            await uow.wallets.update(current.frozen(freeze, now))
            await uow.commit()

    async def lift(self, wallet: Wallet, source: FreezeSource = FreezeSource.ADMIN) -> None:
        """Lifts the wallet's freeze of `source` as wallet's use cases do."""
        async with SqlWalletUnitOfWork(self.wallet_engine) as uow:
            current = await uow.wallets.get(wallet.wallet_id, for_update=True)
            assert current is not None
            await uow.wallets.update(current.lifted(frozenset({source}), datetime.now(UTC)))
            await uow.commit()

    async def balance(self, wallet: Wallet) -> int:
        conn = await self.owner()
        try:
            value = await conn.fetchval(
                "SELECT balance FROM wallets WHERE id = $1", wallet.wallet_id
            )
        finally:
            await conn.close()
        return int(value)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        conn = await self.owner()
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()


@pytest.fixture(scope="module")
async def ledger(databases: Provisioned, redis_url: str) -> AsyncIterator[LedgerWorld]:
    env = transfer_env(databases, redis_url)
    migrated = run_transfer_cli(env, "migrate")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    engine = create_engine(databases.app_dsn("transfer"), pool_size=25, application_name="test")
    wallet_engine = create_engine(databases.app_dsn("wallet"), pool_size=2, application_name="w")
    try:
        yield LedgerWorld(databases, env, engine, PgLedger(engine), wallet_engine)
    finally:
        await engine.dispose()
        await wallet_engine.dispose()


async def ledger_is_clean(ledger: LedgerWorld) -> None:
    """The verifier's every check passes."""
    checks = await SqlLedgerAuditor(ledger.engine, b"k" * 32, None).check()
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]


async def waiting_on_a_lock(
    ledger: LedgerWorld, function: str, within: float = 20.0, *, at_least: int = 1
) -> None:
    """Until `at_least` sessions of transfer's role run `function` and wait on a lock (a role
    sees what its own sessions wait for); polled, with a deadline."""

    async def waiting() -> bool:
        async with ledger.engine.connect() as conn:
            count = await conn.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database() AND position(:f IN query) > 0"
                ),
                {"f": function + "("},
            )
        return (count or 0) >= at_least

    await eventually(
        waiting, within=within, what=f"{at_least} sessions of {function} waiting on a lock"
    )


@asynccontextmanager
async def row_locked(ledger: LedgerWorld, wallet: Wallet) -> AsyncIterator[None]:
    """The wallet's row locked FOR UPDATE by another session (as the owner) until the block
    ends: every movement of it queues behind, with whatever it holds (its key) held."""
    blocker = await ledger.owner()
    try:
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("SELECT 1 FROM wallets WHERE id = $1 FOR UPDATE", wallet.wallet_id)
        try:
            yield
        finally:
            await holding.rollback()
    finally:
        await blocker.close()


def wallet_gate(wallet: Wallet) -> FakeWalletGate:
    """wallet's answers to the movement's PIN and IP checks: PIN 1234, from HOME."""
    return FakeWalletGate(
        pins={wallet.user_id: "1234"},
        wallet_ids={wallet.user_id: wallet.wallet_id},
        trusted_ips={wallet.user_id: {HOME}},
    )


def movement_service(ledger: PgLedger, gate: FakeWalletGate) -> MovementService:
    """TopUp, SendMoney and Withdraw's real use cases over `ledger`; `account_hash` hashes a
    bank account number."""
    return MovementService(
        ledger, gate, account_hash, max_amount_minor=10**12, pin_check_key=PIN_KEY
    )


def account_hash(account_number: str) -> str:
    """The account's hash as the tests' Withdraw stores it (unkeyed: no secret here)."""
    return hashlib.sha256(account_number.encode()).hexdigest()


_WRITTEN_BY_A_MOVEMENT = (
    "ledger_transactions",
    "ledger_postings",
    "wallet_transactions",
    "idempotency_records",
    "outbox_events",
    "limit_usage",
    "top_up_payments",
    "payouts",
)


async def footprint(ledger: LedgerWorld) -> dict[str, int]:
    """The rows of every table a movement writes, the limit usage they hold, and the sum of
    the balances: equal before and after a call that wrote nothing."""
    counts = {}
    for table in _WRITTEN_BY_A_MOVEMENT:
        rows = await ledger.fetch(f"SELECT count(*) AS n FROM {table}")
        counts[table] = rows[0]["n"]
    [usage] = await ledger.fetch("SELECT coalesce(sum(used), 0) AS used FROM limit_usage")
    counts["limit_usage.used"] = usage["used"]
    [balances] = await ledger.fetch("SELECT coalesce(sum(balance), 0) AS total FROM wallets")
    counts["wallets.balance"] = balances["total"]
    return counts


@dataclass(frozen=True)
class RaceOutcome:
    first: Transaction  # the one copy's answer
    replays: list[Transaction]  # a later replay in each process
    gates: list[FakeWalletGate]  # wallet's stand-ins of the two processes


async def twenty_copies(
    ledger: LedgerWorld,
    payer: Wallet,
    move: Callable[[MovementService], Coroutine[Any, Any, Transaction]],
    held_function: str,
) -> RaceOutcome:
    """20 concurrent copies of one movement, through MovementService (the key's hold, wallet's
    checks, the `_held` ledger call) in two "transfer processes" on real PostgreSQL. The copy
    that takes the key is kept inside its ledger call (`held_function`, waiting on the payer's
    row, locked elsewhere) until the 19 others have answered: each overlapped it, whatever the
    scheduling. Asserts what ARCHITECTURE.md ("Idempotency") promises: the 19 are ABORTED
    IDEMPOTENCY_KEY_IN_USE, nothing moved while the one ran, and once it committed a replay in
    either process is its stored answer."""
    engine = create_engine(ledger.dbs.app_dsn("transfer"), pool_size=10, application_name="t2")
    gates = [wallet_gate(payer), wallet_gate(payer)]
    services = [
        movement_service(ledger.ledger, gates[0]),
        movement_service(PgLedger(engine), gates[1]),
    ]
    balance = await ledger.balance(payer)
    copies: list[asyncio.Task[Transaction]] = []
    try:
        async with row_locked(ledger, payer):
            copies = [asyncio.create_task(move(services[i % 2])) for i in range(20)]
            await waiting_on_a_lock(ledger, held_function)

            async def others_answered() -> bool:
                return sum(c.done() for c in copies) == 19

            await eventually(others_answered, what="the 19 other copies answered")
            [running] = [c for c in copies if not c.done()]
            assert await ledger.balance(payer) == balance  # nothing moved yet
        first = await running
        answers = await asyncio.gather(*copies, return_exceptions=True)
        replays = [await move(services[0]), await move(services[1])]
    finally:
        for copy in copies:
            copy.cancel()
        await asyncio.gather(*copies, return_exceptions=True)
        await engine.dispose()
    in_use = [a for a in answers if isinstance(a, IdempotencyKeyInUseError)]
    assert len(in_use) == 19, answers
    assert all(e.kind is ErrorKind.ABORTED and e.reason == "IDEMPOTENCY_KEY_IN_USE" for e in in_use)
    assert [a for a in answers if isinstance(a, Transaction)] == [first]
    assert replays == [first, first]
    return RaceOutcome(first, replays, gates)


async def top_up_on(
    conn: Any, credit: IdempotencyKey, wallet: Wallet, amount: int, reference: str
) -> str:
    """transfer_top_up called on `conn` (an asyncpg connection, in whatever transaction it
    holds) as TopUp calls it, by UPI with `reference`: the outcome."""
    [row] = await conn.fetch(
        "SELECT outcome FROM transfer_top_up($1, $2, $3::uuid, $4, $5, $6, $7, 'INR',"
        " $8, $9, 'UPI test')",
        credit.caller,
        credit.method,
        credit.request_id,
        credit.fingerprint,
        idempotency_lock_key(credit),
        wallet.user_id,
        amount,
        PaymentMethod.UPI.value,
        reference,
    )
    return str(row["outcome"])


async def send_overtaken_by_a_top_up(
    ledger: LedgerWorld, alice: Wallet, bob: Wallet
) -> tuple[LedgerOutcome, IdempotencyKey]:
    """A send of 300 from alice to bob waits for alice's row lock; the session holding it tops
    her up by 700 (in its own transaction) and commits first. The send's outcome and the
    top-up's key."""
    blocker = await ledger.owner()
    try:
        holding = blocker.transaction()
        await holding.start()
        await blocker.execute("SELECT 1 FROM wallets WHERE id = $1 FOR UPDATE", alice.wallet_id)
        sending = asyncio.create_task(
            ledger.ledger.send_money(
                key(alice.user_id), alice.user_id, bob.wallet_id, 300, "INR", ""
            )
        )
        await waiting_on_a_lock(ledger, "transfer_send_money")
        credit = key(alice.user_id, TOP_UP)
        assert await top_up_on(blocker, credit, alice, 700, f"upi-{uuid.uuid4().hex}") == "OK"
        await holding.commit()
        return await sending, credit
    finally:
        await blocker.close()
