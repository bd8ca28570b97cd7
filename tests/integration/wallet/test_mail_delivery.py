"""Wallet's `mail.send` deliveries through the real SmtpMailer: against a slow SMTP server (a
tiny one here, waiting before each reply), and against the devstack's SMTP sink.

A review found that smtplib ran in `asyncio.to_thread` with 10 s per step and no bound on
the conversation. Against a relay answering each command in ~5 s the relay cut every attempt
at its `delivery_timeout` (30 s) while the thread ran on and delivered: up to 20 copies of a
PIN-reset mail, an event dead-lettered as undelivered, and the default executor full of
orphaned threads. Here the relay's timeout is scaled down (`DELIVERY_TIMEOUT`) and the mailer's
deadline with it (`MAIL_DEADLINE`, as 20 s is to 30 s; the data reserve, 40 % of it, with it).

A second review found the deadline started before the send had a thread (4 of them, for the
relay's 8 deliveries at once): half a burst began with part of its time, and a relay taking
seconds to confirm a message turned it into "outcome unknown" dead letters. And a stop
(SIGTERM) released an event whose conversation its thread went on to finish: another replica
mailed the code again.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import re
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
from vaultpay_common.outbox import (
    DeliveryError,
    Handler,
    OutboxEvent,
    OutboxRelay,
    PermanentDeliveryError,
)
from vaultpay_common.runtime import stop_tasks
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
    until the client hangs up), `verdict_delay` (if set) before the reply to the end of the
    data; with `hold_verdict`, never answers the end of the data."""

    delay: float | None
    hold_verdict: bool = False
    verdict_delay: float | None = None
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
                if self.verdict_delay is not None:
                    await asyncio.sleep(self.verdict_delay)  # the server's slowness
                    writer.write(b"250 queued\r\n")
                    await writer.drain()
                    continue
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
    delay: float | None, *, hold_verdict: bool = False, verdict_delay: float | None = None
) -> AsyncIterator[SlowRelay]:
    relay = SlowRelay(delay, hold_verdict, verdict_delay)
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


class CodeWorks:
    """The made-up event's code is the wallet's usable one (no token table here)."""

    async def reset_code_usable(self, code: str) -> bool:
        return True

    async def confirmation_code_usable(self, code: str) -> bool:
        return True


def _mail_handler(mailer: SmtpMailer) -> Handler:
    notifications = NotificationService(
        FakeIpNotificationsUnitOfWork, NotificationHub(), FixedClock()
    )
    handlers = wallet_outbox_handlers(
        Contacts(),
        mailer,
        ReversibleSealer(),
        notifications,
        reset_codes=CodeWorks(),
        ip_codes=CodeWorks(),
        clock=FixedClock(),
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
        # The time it really waited for the verdict (what was left), not the whole deadline.
        waited = re.search(r"no reply in ([0-9.]+)s", str(error))
        assert waited is not None, error
        assert 0 < float(waited.group(1)) <= MAIL_DEADLINE
        assert took < DELIVERY_TIMEOUT
        assert relay.messages == 1
        assert any("outcome unknown" in r.getMessage() for r in caplog.records)
        await eventually(_async(lambda: relay.all_ended), within=DELIVERY_TIMEOUT, what="hang-up")


async def test_a_stuck_relay_does_not_starve_other_threads() -> None:
    """More sends than the default executor (and the mailer) has threads, to a server that
    never answers: they wait on the mailer's own threads, and `asyncio.to_thread` still runs
    at once."""
    default_workers = min(32, (os.cpu_count() or 1) + 4)
    async with _slow_relay(None) as relay:
        mailer = SmtpMailer(_settings(relay.port), deadline=MAIL_DEADLINE)
        sends = [
            asyncio.create_task(mailer.send(f"u{i}@example.com", "Code", "Code 1."))
            for i in range(max(default_workers, MAIL_THREADS) + 2)
        ]
        try:
            await eventually(
                _async(lambda: relay.connections >= MAIL_THREADS),
                within=DELIVERY_TIMEOUT,
                what="every mail thread connected",
            )

            assert await asyncio.to_thread(lambda: "ran") == "ran"

            assert not any(send.done() for send in sends)  # all still stuck or queued
            # Each gets its whole deadline once it has a thread: MAIL_THREADS at a time.
            turns = -(-len(sends) // MAIL_THREADS)
            async with asyncio.timeout(turns * MAIL_DEADLINE + DELIVERY_TIMEOUT):
                outcomes = await asyncio.gather(*sends, return_exceptions=True)
            assert all(isinstance(o, MailDeliveryError) for o in outcomes), outcomes
        finally:
            for send in sends:
                send.cancel()
        await eventually(_async(lambda: relay.all_ended), within=DELIVERY_TIMEOUT, what="hang-ups")


async def test_a_burst_of_the_relays_deliveries_each_get_the_whole_deadline() -> None:
    """As many deliveries at once as the relay runs, to a server that takes 60 % of the
    deadline to confirm each message: all delivered. With 4 threads and the deadline counted
    from the call, the second half had what the first left, and were dead-lettered."""
    at_once = inspect.signature(OutboxRelay).parameters["max_concurrent_deliveries"].default
    assert at_once <= MAIL_THREADS  # wallet's bootstrap passes its relay's number too
    async with _slow_relay(0.0, verdict_delay=MAIL_DEADLINE * 0.6) as relay:
        handler = _mail_handler(SmtpMailer(_settings(relay.port), deadline=MAIL_DEADLINE))

        outcomes = await asyncio.gather(
            *(_deliver(handler, _pin_reset_event(f"user{i}")) for i in range(at_once))
        )

        assert [error for error, _ in outcomes] == [None] * at_once
        assert relay.messages == at_once


async def test_too_little_time_left_for_the_data_fails_the_attempt_before_it() -> None:
    """0.35 of a 2 s deadline a reply: DATA would be due with 0.6 s left, less than the 0.8 s
    kept for the message and its verdict. Not sent, retried; before, the message went and its
    verdict came too late: "outcome unknown", dead-lettered."""
    async with _slow_relay(MAIL_DEADLINE * 0.175) as relay:
        handler = _mail_handler(SmtpMailer(_settings(relay.port), deadline=MAIL_DEADLINE))

        error, took = await _deliver(handler, _pin_reset_event())

        assert isinstance(error, DeliveryError), error
        assert not isinstance(error, PermanentDeliveryError)  # nothing sent: retried
        assert "not sent" in str(error)
        assert took < DELIVERY_TIMEOUT
        await eventually(_async(lambda: relay.all_ended), within=DELIVERY_TIMEOUT, what="hang-up")
        assert relay.messages == 0 and "DATA" not in relay.commands


@pytest.mark.parametrize("verdict", ["given", "never"])
async def test_a_stop_during_the_conversation_gets_its_real_outcome(verdict: str) -> None:
    """The relay is cancelled (SIGTERM), again and again as `stop_tasks` does, while the
    server has the message: the handler waits for the conversation and reports what it came
    to (delivered, or outcome unknown), not the cancellation that would release the event for
    another replica to mail again."""
    given = verdict == "given"
    async with _slow_relay(
        0.0, hold_verdict=not given, verdict_delay=MAIL_DEADLINE / 2 if given else None
    ) as relay:
        handler = _mail_handler(SmtpMailer(_settings(relay.port), deadline=MAIL_DEADLINE))
        delivery = asyncio.create_task(_deliver(handler, _pin_reset_event()))
        await eventually(
            _async(lambda: relay.messages == 1), within=DELIVERY_TIMEOUT, what="the message"
        )

        still_running = await stop_tasks([delivery], within=DELIVERY_TIMEOUT, recancel_every=0.05)

        assert still_running == []
        assert not delivery.cancelled()
        error, _ = delivery.result()
        if given:
            assert error is None  # delivered: the relay settles it so
        else:
            assert isinstance(error, PermanentDeliveryError) and "outcome unknown" in str(error)
        await eventually(_async(lambda: relay.all_ended), within=DELIVERY_TIMEOUT, what="hang-up")
        assert relay.connections == 1 and relay.messages == 1


async def test_a_send_cancelled_while_waiting_for_a_thread_is_dropped() -> None:
    async with _slow_relay(None) as relay:
        mailer = SmtpMailer(_settings(relay.port), deadline=MAIL_DEADLINE, threads=1)
        busy = asyncio.create_task(mailer.send("a@example.com", "Code", "Code 1."))
        await eventually(
            _async(lambda: relay.connections == 1), within=DELIVERY_TIMEOUT, what="a connection"
        )
        queued = asyncio.create_task(mailer.send("b@example.com", "Code", "Code 2."))
        await asyncio.sleep(0)  # one turn of the loop: it is handed to the (busy) thread pool

        queued.cancel()

        # At once, not when the busy thread is free.
        async with asyncio.timeout(MAIL_DEADLINE / 2):
            with pytest.raises(asyncio.CancelledError):
                await queued
        assert not busy.done()
        async with asyncio.timeout(DELIVERY_TIMEOUT):
            with pytest.raises(MailDeliveryError):
                await busy
            # One thread, first come first served: had it stayed queued, it would run first.
            with pytest.raises(MailDeliveryError):
                await mailer.send("c@example.com", "Code", "Code 3.")
        assert relay.connections == 2


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
