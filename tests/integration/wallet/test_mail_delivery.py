"""Wallet's `mail.send` deliveries through the real SmtpMailer: against a slow SMTP server (a
tiny one here, waiting before each reply), and against the devstack's SMTP sink.

A review found that smtplib ran in `asyncio.to_thread` with 10 s per step and no bound on
the conversation. Against a relay answering each command in ~5 s the relay cut every attempt
at its `delivery_timeout` (30 s) while the thread ran on and delivered: up to 20 copies of a
PIN-reset mail, an event dead-lettered as undelivered, and the default executor full of
orphaned threads. Here the relay's timeout is scaled down (`DELIVERY_TIMEOUT`) and the mailer's
deadline with it (`MAIL_DEADLINE`, as 20 s is to 30 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from tests.fakes.wallet import EPOCH, FixedClock, ReversibleSealer
from tests.fakes.wallet_ip_notifications import FakeIpNotificationsUnitOfWork
from tests.support import eventually
from vaultpay_common.config import SmtpSettings
from vaultpay_common.mail import MAIL_THREADS, MailDeliveryError, SmtpMailer
from vaultpay_common.outbox import DeliveryError, Handler, OutboxEvent, PermanentDeliveryError
from vaultpay_devstack.procs import LOOPBACK
from vaultpay_devstack.smtp_sink import read_messages, start_smtp_sink, wait_for_message
from vaultpay_wallet.adapters.deliveries import wallet_outbox_handlers
from vaultpay_wallet.adapters.notification_hub import NotificationHub
from vaultpay_wallet.adapters.peers import UserContact
from vaultpay_wallet.service_layer.notifications import NotificationService

DELIVERY_TIMEOUT = 8.0  # the relay's (30 s in production)
MAIL_DEADLINE = 2.0  # the mailer's (20 s in production)
CODE = "482913"


# ----- a slow SMTP server -----------------------------------------------------------------


@dataclass
class SlowRelay:
    """Waits `delay` seconds before each reply (None: never replies, holding the connection
    until the client hangs up); with `hold_verdict`, answers everything at once but never the
    end of the data."""

    delay: float | None
    hold_verdict: bool = False
    port: int = 0
    connections: int = 0
    ended: int = 0  # connections over (the client hung up or said QUIT)
    messages: int = 0  # whole messages received, their final "." included
    commands: list[str] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self._converse(reader, writer)
        except ConnectionError:
            pass
        finally:
            self.ended += 1
            writer.close()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not await self._reply(reader, writer, b"220 slow.test ESMTP\r\n"):
            return
        while line := await reader.readline():
            verb = line.split(b" ", 1)[0].strip().upper().decode()
            self.commands.append(verb)
            if verb == "DATA":
                if not await self._reply(reader, writer, b"354 go ahead\r\n"):
                    return
                while (data := await reader.readline()) not in (b".\r\n", b""):
                    pass
                if not data:
                    return
                self.messages += 1
                if self.hold_verdict:
                    await reader.read()  # until the client hangs up
                    return
                answer = b"250 queued\r\n"
            elif verb == "QUIT":
                await self._reply(reader, writer, b"221 bye\r\n")
                return
            else:
                answer = b"250 slow.test\r\n"
            if not await self._reply(reader, writer, answer):
                return

    async def _reply(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, text: bytes
    ) -> bool:
        if self.delay is None:
            await reader.read()  # never answers: until the client hangs up
            return False
        await asyncio.sleep(self.delay)  # the server's slowness, not a test's wait
        writer.write(text)
        await writer.drain()
        return True

    @property
    def all_ended(self) -> bool:
        return self.connections > 0 and self.ended == self.connections


@contextlib.asynccontextmanager
async def _slow_relay(
    delay: float | None, *, hold_verdict: bool = False
) -> AsyncIterator[SlowRelay]:
    relay = SlowRelay(delay, hold_verdict)
    server = await asyncio.start_server(relay.serve, LOOPBACK, 0)
    relay.port = server.sockets[0].getsockname()[1]
    try:
        yield relay
    finally:
        server.close()
        await server.wait_closed()


# ----- the handler ------------------------------------------------------------------------


class Contacts:
    async def contact(self, user_id: str) -> UserContact:
        return UserContact(f"{user_id}@example.com", "Asha Rao", True)


def _mail_handler(mailer: SmtpMailer) -> Handler:
    notifications = NotificationService(
        FakeIpNotificationsUnitOfWork, NotificationHub(), FixedClock()
    )
    handlers = wallet_outbox_handlers(
        Contacts(), mailer, ReversibleSealer(), notifications, clock=FixedClock()
    )
    return handlers["mail.send"]


def _pin_reset_event(user: str = "asha") -> OutboxEvent:
    """What PinService.request_pin_reset stores, at the clock's time (EPOCH)."""
    params = {
        "wallet_id": str(uuid.uuid4()),
        "token_sealed": ReversibleSealer().seal(CODE),
        "expires_at": (EPOCH + timedelta(minutes=15)).isoformat(),
    }
    payload = {"user_id": user, "template": "pin_reset", "params": params}
    return OutboxEvent(str(uuid.uuid4()), "wallet", "mail.send", user, payload, 1, EPOCH)


def _settings(port: int) -> SmtpSettings:
    return SmtpSettings(host=LOOPBACK, port=port)


async def _deliver(handler: Handler, event: OutboxEvent) -> tuple[BaseException | None, float]:
    """Runs `handler` as the relay does (cut at DELIVERY_TIMEOUT): what it raised, and when."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            await handler(event)
    except Exception as exc:
        return exc, loop.time() - started
    return None, loop.time() - started


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """`check` as `eventually` polls it."""

    async def checked() -> bool:
        return check()

    return checked


# ----- the tests --------------------------------------------------------------------------


async def test_a_slow_relay_ends_the_attempt_in_its_thread_before_the_relay_gives_up() -> None:
    """1.5 s a reply: the whole conversation would take ~10 s, past the relay's timeout. The
    attempt fails within the mailer's deadline, hangs up, and no message follows it."""
    async with _slow_relay(1.5) as relay:
        handler = _mail_handler(SmtpMailer(_settings(relay.port), deadline=MAIL_DEADLINE))

        error, took = await _deliver(handler, _pin_reset_event())

        assert isinstance(error, DeliveryError), error  # not the relay's TimeoutError
        assert not isinstance(error, PermanentDeliveryError)  # not delivered: retried
        assert "out of time" in str(error) and "EHLO" in str(error)
        assert took < DELIVERY_TIMEOUT
        # The thread hung up: nothing more will reach the server from this attempt.
        await eventually(_async(lambda: relay.all_ended), within=DELIVERY_TIMEOUT, what="hang-up")
        assert relay.messages == 0 and "DATA" not in relay.commands


async def test_no_verdict_after_the_whole_message_is_dead_lettered_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server has the message but never answers its end: it may have been delivered, so
    the attempt ends within the deadline and is not retried (a retry mails the code again)."""
    async with _slow_relay(0.0, hold_verdict=True) as relay:
        handler = _mail_handler(SmtpMailer(_settings(relay.port), deadline=MAIL_DEADLINE))

        with caplog.at_level(logging.WARNING):
            error, took = await _deliver(handler, _pin_reset_event())

        assert isinstance(error, PermanentDeliveryError), error
        assert "outcome unknown" in str(error)
        assert took < DELIVERY_TIMEOUT
        assert relay.messages == 1
        assert any("outcome unknown" in r.getMessage() for r in caplog.records)
        await eventually(_async(lambda: relay.all_ended), within=DELIVERY_TIMEOUT, what="hang-up")


async def test_a_stuck_relay_does_not_starve_other_threads() -> None:
    """More sends than the default executor has threads, to a server that never answers:
    they wait on the mailers' own threads, and `asyncio.to_thread` still runs at once."""
    default_workers = min(32, (os.cpu_count() or 1) + 4)
    async with _slow_relay(None) as relay:
        mailer = SmtpMailer(_settings(relay.port), deadline=MAIL_DEADLINE)
        sends = [
            asyncio.create_task(mailer.send(f"u{i}@example.com", "Code", "Code 1."))
            for i in range(default_workers + 2)
        ]
        try:
            await eventually(
                _async(lambda: relay.connections >= MAIL_THREADS),
                within=DELIVERY_TIMEOUT,
                what="every mail thread connected",
            )

            assert await asyncio.to_thread(lambda: "ran") == "ran"

            assert not any(send.done() for send in sends)  # all still stuck or queued
            async with asyncio.timeout(DELIVERY_TIMEOUT):
                outcomes = await asyncio.gather(*sends, return_exceptions=True)
            assert all(isinstance(o, MailDeliveryError) for o in outcomes), outcomes
        finally:
            for send in sends:
                send.cancel()
        await eventually(_async(lambda: relay.all_ended), within=DELIVERY_TIMEOUT, what="hang-ups")


async def test_a_normal_mail_still_arrives_at_the_sink(tmp_path: Path) -> None:
    maildir = tmp_path / "mail"
    sink = start_smtp_sink(maildir, log=tmp_path / "smtp-sink.log")
    try:
        handler = _mail_handler(SmtpMailer(_settings(sink.port)))

        error, _ = await _deliver(handler, _pin_reset_event("asha"))

        assert error is None
        mail = await asyncio.to_thread(wait_for_message, maildir, to="asha@example.com")
        assert mail.subject == "Your VaultPay PIN reset code"
        assert f"Your single-use code: {CODE}" in mail.text
        assert len(read_messages(maildir)) == 1
    finally:
        sink.stop()
