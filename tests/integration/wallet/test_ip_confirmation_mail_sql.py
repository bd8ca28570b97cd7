"""The mail delivery's look at an IP-confirmation code on real PostgreSQL, the wallet chain at
its head, as wallet's own role (`awaits_confirmation`: no Redis, no lock).

* A live code's mail is sent; replayed after the code was used, it is dropped.
* The race that mails a needless code: a check from an address reads no trust just before a
  confirmation of it commits, waits on the confirmation's row lock, then finds the code used
  and mails a new one. The first code's row is replaced, the second's address is trusted:
  neither mail is sent, in either order.
* The look is one statement reading `ip_confirmations_token_key` and `trusted_ips_pkey`
  among many rows, never a whole table.

Review of 9da92ee: an IP-confirmation mail whose code no longer works was still mailed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes.wallet import FixedClock, ReversibleSealer
from tests.fakes.wallet_ip_notifications import FakeIpNotificationsUnitOfWork, FakeTrustedIpCache
from tests.integration.transfer.sql_capture import (
    CapturedStatement,
    prepared_plan_index_conditions,
    prepared_plan_scans,
)
from tests.integration.wallet.wallet_chain import migrate_to_head
from tests.support import eventually
from tests.unit.wallet.test_mail_templates import Contacts, Mailbox
from vaultpay_common.db import create_engine
from vaultpay_common.outbox import Handler, OutboxEvent
from vaultpay_devstack.postgres import Provisioned
from vaultpay_wallet.adapters.deliveries import wallet_outbox_handlers
from vaultpay_wallet.adapters.ip_trust_sql import SqlIpConfirmationRepository
from vaultpay_wallet.adapters.notification_hub import NotificationHub
from vaultpay_wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from vaultpay_wallet.domain.ip_trust import hash_confirmation_token
from vaultpay_wallet.service_layer.ip_trust import CheckIpTrust, ConfirmIp, IpTrustService
from vaultpay_wallet.service_layer.notifications import NotificationService

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
KEY = b"integration-ip-hash-key-0123456789"
IP = "203.0.113.7"
FILL = 20_000  # other users' confirmations of the last day, and as many trusted addresses
APP = "ip-confirmation-mail"  # the engine's application_name, to find its sessions
PATIENCE = 10.0
SCANS = {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}


def _owner_dsn(dbs: Provisioned) -> str:
    return dbs.url(dbs.vaultpay_owner_role, dbs.vaultpay_database, driver="postgresql")


def _plain(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="module")
async def filled(databases: Provisioned) -> Provisioned:
    """The chain at its head, FILL confirmations of other users over the last day (most used)
    and a trusted address for half of them (written as the owner: test data only), ANALYZE."""
    migrated = migrate_to_head(databases)
    conn = await asyncpg.connect(_owner_dsn(migrated))
    try:
        await conn.execute(
            "INSERT INTO ip_confirmations (user_id, ip_hash, token_hash, request_id, sent_at,"
            " expires_at, used_at)"
            " SELECT gen_random_uuid(), md5('ip' || i) || md5('ip2' || i),"
            " md5('token' || i) || md5('token2' || i), gen_random_uuid()::text,"
            " $1::timestamptz - interval '4 seconds' * i,"
            " $1::timestamptz - interval '4 seconds' * i + interval '30 minutes',"
            " CASE WHEN i % 5 = 0 THEN NULL"
            " ELSE $1::timestamptz - interval '4 seconds' * i + interval '1 minute' END"
            " FROM generate_series(1, $2) AS i",
            NOW,
            FILL,
        )
        await conn.execute(
            "INSERT INTO trusted_ips (user_id, ip_hash, first_seen_at, last_seen_at, expires_at)"
            " SELECT user_id, ip_hash, sent_at, sent_at, sent_at + interval '30 days'"
            " FROM ip_confirmations WHERE used_at IS NOT NULL"
        )
        await conn.execute("ANALYZE ip_confirmations")
        await conn.execute("ANALYZE trusted_ips")
    finally:
        await conn.close()
    return migrated


@pytest.fixture(scope="module")
async def engine(filled: Provisioned) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(filled.app_dsn("wallet"), pool_size=6, application_name=APP)
    try:
        yield engine
    finally:
        await engine.dispose()


class _CommitHeld(SqlWalletUnitOfWork):
    """Stops before its commit (its row lock held) until `release` is set."""

    def __init__(self, engine: AsyncEngine, reached: asyncio.Event, release: asyncio.Event):
        super().__init__(engine)
        self._reached, self._release = reached, release

    async def commit(self) -> None:
        self._reached.set()
        await self._release.wait()
        await super().commit()


class _NoPinResets:
    async def reset_code_usable(self, code: str) -> bool:
        raise AssertionError("no PIN reset mail is delivered in these tests")


class _World:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.clock = FixedClock(NOW)
        self.sealer = ReversibleSealer()
        self.user = str(uuid.uuid4())
        self.ip_trust = self.service(lambda: SqlWalletUnitOfWork(engine))
        self.mailbox = Mailbox()
        notifications = NotificationService(
            FakeIpNotificationsUnitOfWork, NotificationHub(), self.clock
        )
        self.deliver: Handler = wallet_outbox_handlers(
            Contacts(),
            self.mailbox,
            self.sealer,
            notifications,
            reset_codes=_NoPinResets(),
            ip_codes=self.ip_trust,  # as the bootstrap wires it
            clock=self.clock,
        )["mail.send"]

    def service(self, uow: Callable[[], SqlWalletUnitOfWork]) -> IpTrustService:
        return IpTrustService(uow, FakeTrustedIpCache(), self.sealer, self.clock, ip_hash_key=KEY)

    async def check(self) -> bool:
        checked = await self.ip_trust.check_ip_trust(CheckIpTrust(str(uuid.uuid4()), self.user, IP))
        return checked.confirmation_sent

    async def mails(self) -> list[OutboxEvent]:
        """The user's `mail.send` events as the relay hands them over, oldest first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT event_id, key, payload, created_at FROM outbox_events"
                    " WHERE topic = 'mail.send' AND payload->>'user_id' = :u ORDER BY created_at"
                ),
                {"u": self.user},
            )
            return [
                OutboxEvent(
                    str(r.event_id), "wallet", "mail.send", r.key, r.payload, 1, r.created_at
                )
                for r in rows
            ]

    def code_of(self, event: OutboxEvent) -> str:
        return self.sealer.open(str(event.payload["params"]["token_sealed"]))


async def _waiting_on_a_lock(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        waiting = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = :a AND wait_event_type = 'Lock'"
            ),
            {"a": APP},
        )
    return bool(waiting)


async def test_a_live_codes_mail_is_sent_and_replayed_after_its_use_is_dropped(
    engine: AsyncEngine,
) -> None:
    world = _World(engine)
    assert await world.check()
    [event] = await world.mails()

    await world.deliver(event)
    [(_, _, body)] = world.mailbox.sent
    assert world.code_of(event) in body

    await world.ip_trust.confirm_ip(ConfirmIp(world.code_of(event)))
    await world.deliver(event)  # replayed from the dead letters after the user confirmed
    assert len(world.mailbox.sent) == 1


async def test_codes_of_a_check_racing_a_confirmation_are_not_mailed(engine: AsyncEngine) -> None:
    world = _World(engine)
    assert await world.check()
    [first] = await world.mails()
    reached, release = asyncio.Event(), asyncio.Event()
    holding = world.service(lambda: _CommitHeld(engine, reached, release))
    confirming = asyncio.create_task(holding.confirm_ip(ConfirmIp(world.code_of(first))))
    try:
        async with asyncio.timeout(PATIENCE):
            await reached.wait()  # the code marked used, the address trusted, not committed
        checking = asyncio.create_task(world.check())  # reads no trust, waits on the row
        await eventually(
            lambda: _waiting_on_a_lock(engine), within=PATIENCE, what="the check waits"
        )
    finally:
        release.set()
    async with asyncio.timeout(PATIENCE):
        await confirming
        assert await checking  # found the code used: a second one mailed
    first, second = await world.mails()
    assert world.code_of(first) != world.code_of(second)

    await world.deliver(second)  # the address is trusted
    await world.deliver(first)  # its row replaced by the second's

    assert world.mailbox.sent == []
    assert not await world.ip_trust.confirmation_code_usable(world.code_of(second))


async def test_the_look_reads_the_token_index_and_the_trusted_key_among_many_rows(
    engine: AsyncEngine, filled: Provisioned
) -> None:
    world = _World(engine)
    assert await world.check()
    [event] = await world.mails()
    token_hash = hash_confirmation_token(world.code_of(event))

    with CapturedStatement(engine) as captured:
        async with engine.connect() as conn:
            assert await SqlIpConfirmationRepository(conn).awaits_confirmation(token_hash, NOW)
    dsn = _plain(filled.app_dsn("wallet"))
    scans = await prepared_plan_scans(dsn, "look", captured)
    conditions = await prepared_plan_index_conditions(dsn, "look", captured)
    for mode, found in scans.items():  # generic too: asyncpg prepares the statement
        assert ("Seq Scan", "ip_confirmations") not in found, (mode, found)
        assert ("Seq Scan", "trusted_ips") not in found, (mode, found)
        assert all(node in SCANS for node, _ in found), (mode, found)
        read = conditions[mode]
        assert "token_hash" in read.get("ip_confirmations_token_key", ""), (mode, read)
        # The pair's trusted row by its key (or the user's range of trusted_ips_user_seen_idx,
        # as cheap), never a walk of a whole index.
        trusted = [i for i in read if i.startswith("trusted_ips_")]
        assert len(trusted) == 1 and "user_id" in read[trusted[0]], (mode, read)
