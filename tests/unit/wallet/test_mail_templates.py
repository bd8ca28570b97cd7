"""What the use cases put in the outbox renders into the mail a user reads.

Each test drives the real use case on fakes, hands its `mail.send` event to the real delivery
handler, and reads the mail the fake mailer got: the code in it is the one that works.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.fakes.wallet import FixedClock, ReversibleSealer
from tests.fakes.wallet_ip_notifications import FakeIpNotificationsUnitOfWork, FakeTrustedIpCache
from tests.unit.wallet.wallet_world import World, key
from vaultpay_common.mail import (
    _HANG_UP_SECONDS,
    DEFAULT_DEADLINE_SECONDS,
    MailDeliveryError,
    MailOutcomeUnknownError,
)
from vaultpay_common.outbox import (
    DeliveryError,
    Handler,
    OutboxEvent,
    OutboxMessage,
    OutboxRelay,
    PermanentDeliveryError,
    SettledOnReturn,
    UnknownToThisBuildError,
)
from vaultpay_wallet.adapters.deliveries import (
    MAIL_TEMPLATES,
    IpConfirmationCodes,
    ResetCodes,
    wallet_outbox_handlers,
)
from vaultpay_wallet.adapters.notification_hub import NotificationHub
from vaultpay_wallet.adapters.peers import UserContact
from vaultpay_wallet.service_layer.commands import RequestPinReset, ResetPin
from vaultpay_wallet.service_layer.ip_trust import CheckIpTrust, ConfirmIp, IpTrustService
from vaultpay_wallet.service_layer.notifications import NotificationService
from vaultpay_wallet.settings import WalletSettings


class Contacts:
    def __init__(self, active: bool = True) -> None:
        self.active = active

    async def contact(self, user_id: str) -> UserContact:
        return UserContact(f"{user_id}@example.com", "Asha Rao", self.active)


class Mailbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    async def send(self, to: str, subject: str, body: str) -> None:
        self.sent.append((to, subject, body))


class FailingMailer:
    def __init__(self, error: MailDeliveryError) -> None:
        self.error = error

    async def send(self, to: str, subject: str, body: str) -> None:
        raise self.error


class EveryCodeWorks:
    """`ResetCodes` and `IpConfirmationCodes` for events made up by a test (no token behind
    them)."""

    async def reset_code_usable(self, code: str) -> bool:
        return True

    async def confirmation_code_usable(self, code: str) -> bool:
        return True


def _handlers(
    mailbox: Mailbox | FailingMailer,
    contacts: Contacts | None = None,
    clock: FixedClock | None = None,
    reset_codes: ResetCodes | None = None,
    ip_codes: IpConfirmationCodes | None = None,
) -> dict[str, Handler]:
    notifications = NotificationService(
        FakeIpNotificationsUnitOfWork, NotificationHub(), FixedClock()
    )
    return wallet_outbox_handlers(
        contacts or Contacts(),
        mailbox,
        ReversibleSealer(),
        notifications,
        reset_codes=reset_codes or EveryCodeWorks(),
        ip_codes=ip_codes or EveryCodeWorks(),
        clock=clock or FixedClock(),
    )


def _event(message: OutboxMessage) -> OutboxEvent:
    return OutboxEvent(
        str(uuid.uuid4()),
        "wallet",
        message.topic,
        message.key,
        message.payload,
        1,
        datetime(2026, 1, 1, tzinfo=UTC),
    )


def _code_in(body: str) -> str:
    return body.split("code: ", 1)[1].split()[0]


async def test_the_pin_reset_mail_carries_the_code_that_resets_the_pin() -> None:
    world = World()
    wallet = await world.open_wallet_with_pin("alice")
    await world.pins.request_pin_reset(RequestPinReset("alice", key()))
    [message] = world.uow.outbox.of_topic("mail.send")
    mailbox = Mailbox()

    await _handlers(mailbox, reset_codes=world.pins)["mail.send"](_event(message))

    [(to, subject, body)] = mailbox.sent
    assert to == "alice@example.com"
    assert subject == MAIL_TEMPLATES["pin_reset"][0]
    assert "Hello Asha Rao" in body and wallet.id in body
    assert "token_sealed" not in body and "sealed:" not in body
    await world.pins.reset_pin(ResetPin(_code_in(body), "9753", "9753", key()))


async def test_the_ip_confirmation_mail_carries_the_code_that_confirms_the_ip() -> None:
    uow = FakeIpNotificationsUnitOfWork()
    sealer = ReversibleSealer()
    service = IpTrustService(
        lambda: uow, FakeTrustedIpCache(), sealer, FixedClock(), ip_hash_key=b"k" * 32
    )
    user = str(uuid.uuid4())
    check = await service.check_ip_trust(CheckIpTrust(str(uuid.uuid4()), user, "203.0.113.7"))
    assert check.confirmation_sent
    [message] = uow.outbox.of_topic("mail.send")
    mailbox = Mailbox()

    await _handlers(mailbox, ip_codes=service)["mail.send"](_event(message))  # a live code

    [(_, subject, body)] = mailbox.sent
    assert subject == MAIL_TEMPLATES["ip_confirmation"][0]
    assert "203.0.113.7" not in body  # the mail names the network by its keyed hash only
    assert "POST /v1/ip-trust:confirm" in body and "link" not in body  # QA: said "link"
    confirmed = await service.confirm_ip(ConfirmIp(_code_in(body)))
    assert confirmed.user_id == user


async def test_a_deactivated_user_gets_no_mail() -> None:
    world = World()
    await world.open_wallet_with_pin("alice")
    await world.pins.request_pin_reset(RequestPinReset("alice", key()))
    [message] = world.uow.outbox.of_topic("mail.send")
    mailbox = Mailbox()

    await _handlers(mailbox, Contacts(active=False), reset_codes=world.pins)["mail.send"](
        _event(message)
    )

    assert mailbox.sent == []


async def _pin_reset_event(world: World) -> OutboxEvent:
    await world.open_wallet_with_pin("alice")
    await world.pins.request_pin_reset(RequestPinReset("alice", key()))
    [message] = world.uow.outbox.of_topic("mail.send")
    return _event(message)


async def _ip_confirmation_event(clock: FixedClock) -> OutboxEvent:
    uow = FakeIpNotificationsUnitOfWork()
    service = IpTrustService(
        lambda: uow, FakeTrustedIpCache(), ReversibleSealer(), clock, ip_hash_key=b"k" * 32
    )
    await service.check_ip_trust(CheckIpTrust(str(uuid.uuid4()), str(uuid.uuid4()), "203.0.113.7"))
    [message] = uow.outbox.of_topic("mail.send")
    return _event(message)


async def test_a_pin_reset_mail_whose_code_expired_is_dropped_not_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A retry (up to an hour after the request) mailed a 15-minute code already dead."""
    world = World()
    event = await _pin_reset_event(world)
    mailbox = Mailbox()
    handler = _handlers(mailbox, clock=world.clock, reset_codes=world.pins)["mail.send"]

    world.clock.advance(timedelta(minutes=15) - timedelta(seconds=1))
    await handler(event)  # one second left: sent
    assert len(mailbox.sent) == 1

    world.clock.advance(timedelta(seconds=1))
    with caplog.at_level(logging.INFO, logger="vaultpay_wallet.adapters.deliveries"):
        await handler(event)  # delivered as far as the relay knows: no retry

    assert len(mailbox.sent) == 1
    [record] = [r for r in caplog.records if "expired" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert record.__dict__["event_id"] == event.event_id


async def test_an_ip_confirmation_mail_whose_code_expired_is_dropped_not_sent() -> None:
    clock = FixedClock()
    event = await _ip_confirmation_event(clock)
    mailbox = Mailbox()
    clock.advance(timedelta(minutes=30))

    await _handlers(mailbox, clock=clock)["mail.send"](event)

    assert mailbox.sent == []


class _IpWorld:
    """The IP-trust service on fakes, and the mails its checks put in the outbox."""

    def __init__(self) -> None:
        self.clock = FixedClock()
        self.uow = FakeIpNotificationsUnitOfWork()
        self.sealer = ReversibleSealer()
        self.service = IpTrustService(
            lambda: self.uow,
            FakeTrustedIpCache(),
            self.sealer,
            self.clock,
            ip_hash_key=b"k" * 32,
        )
        self.user = str(uuid.uuid4())

    async def check(self) -> None:
        await self.service.check_ip_trust(CheckIpTrust(str(uuid.uuid4()), self.user, "203.0.113.7"))

    def events(self) -> list[OutboxEvent]:
        return [_event(m) for m in self.uow.outbox.of_topic("mail.send")]

    def code_of(self, event: OutboxEvent) -> str:
        params = event.payload["params"]
        assert isinstance(params, dict)
        return self.sealer.open(str(params["token_sealed"]))

    async def check_unaware_of_the_trust(self) -> None:
        """A check that read no trust before a confirmation of the address committed (on
        PostgreSQL its upsert then waits on the confirmation's row lock and finds the code
        used): it mails a new code for an address trusted meanwhile."""
        trusted = dict(self.uow.trusted_ips.rows)
        self.uow.trusted_ips.rows.clear()
        await self.check()
        self.uow.trusted_ips.rows.update(trusted)


async def test_an_ip_confirmation_mail_whose_code_was_used_is_dropped_not_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A mail dead-lettered as "outcome unknown" (likely delivered), the code used, then
    the mail replayed from the dead letters: it would carry a dead code."""
    world = _IpWorld()
    await world.check()
    [event] = world.events()
    await world.service.confirm_ip(ConfirmIp(world.code_of(event)))
    mailbox = Mailbox()

    with caplog.at_level(logging.INFO, logger="vaultpay_wallet.adapters.deliveries"):
        await _handlers(mailbox, clock=world.clock, ip_codes=world.service)["mail.send"](event)

    assert mailbox.sent == []
    [record] = [r for r in caplog.records if "no longer works" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert record.__dict__["event_id"] == event.event_id
    assert record.__dict__["template"] == "ip_confirmation"


async def test_ip_confirmation_mails_of_a_replaced_code_or_a_trusted_address_are_dropped() -> None:
    """The first code is confirmed while a check from the same address, unaware of it, mails
    a second: the first's row is replaced (superseded once used), the second's address is
    trusted. Neither mail, delivered in any order, carries a code worth typing."""
    world = _IpWorld()
    await world.check()
    await world.service.confirm_ip(ConfirmIp(world.code_of(world.events()[0])))
    await world.check_unaware_of_the_trust()
    first, second = world.events()
    mailbox = Mailbox()
    handler = _handlers(mailbox, clock=world.clock, ip_codes=world.service)["mail.send"]

    await handler(second)
    await handler(first)

    assert mailbox.sent == []


async def test_a_live_ip_confirmation_code_is_mailed_and_still_confirms() -> None:
    """Within its 30 minutes a later check mails nothing, and the code in force is mailed
    (a code is never superseded while it works)."""
    world = _IpWorld()
    await world.check()
    world.clock.advance(timedelta(minutes=29))
    await world.check()
    [event] = world.events()
    mailbox = Mailbox()

    await _handlers(mailbox, clock=world.clock, ip_codes=world.service)["mail.send"](event)

    [(_, _, body)] = mailbox.sent
    assert (await world.service.confirm_ip(ConfirmIp(_code_in(body)))).user_id == world.user


async def test_a_mail_the_server_may_have_delivered_is_dead_lettered_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The SMTP server had the whole message and gave no verdict: a retry would mail the same
    code again (every retry, against a slow relay)."""
    world = World()
    event = await _pin_reset_event(world)
    unknown = MailOutcomeUnknownError("SMTP delivery outcome unknown: ...")
    handler = _handlers(FailingMailer(unknown), clock=world.clock, reset_codes=world.pins)[
        "mail.send"
    ]

    with caplog.at_level(logging.WARNING), pytest.raises(PermanentDeliveryError) as dead:
        await handler(event)

    assert "outcome unknown" in str(dead.value)
    [record] = [r for r in caplog.records if "outcome unknown" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert record.__dict__["event_id"] == event.event_id


def test_a_mail_attempt_ends_well_inside_the_relays_delivery_timeout() -> None:
    """The contact look-up, then the conversation (its deadline counted from its thread's
    start: wallet's mailer has a thread for each delivery its relay runs at once), then at
    most a moment to hang up: seconds inside the relay's timeout, or the relay would record a
    timeout while the thread delivered."""
    look_up = WalletSettings.model_fields["peer_timeout_seconds"].default
    delivery_timeout = inspect.signature(OutboxRelay).parameters["delivery_timeout"].default
    assert look_up + DEFAULT_DEADLINE_SECONDS + _HANG_UP_SECONDS + 5 <= delivery_timeout


async def test_a_mail_the_server_did_not_take_is_retried() -> None:
    world = World()
    event = await _pin_reset_event(world)
    failed = MailDeliveryError("SMTP delivery failed: out of time ...")
    handler = _handlers(FailingMailer(failed), clock=world.clock, reset_codes=world.pins)[
        "mail.send"
    ]

    with pytest.raises(DeliveryError) as retried:
        await handler(event)

    assert not isinstance(retried.value, PermanentDeliveryError)


@pytest.mark.parametrize(
    "payload",
    [
        {"user_id": "alice", "template": "pin_reset", "params": {"token_sealed": "x"}},
        {"user_id": "alice", "template": "pin_reset", "params": "not an object"},
    ],
    ids=["a code that does not open", "params not an object"],
)
async def test_an_undeliverable_mail_is_a_permanent_failure(payload: dict[str, object]) -> None:
    mailbox = Mailbox()
    handler = _handlers(mailbox)["mail.send"]
    with pytest.raises(PermanentDeliveryError):
        await handler(_event(OutboxMessage("mail.send", payload, key="alice")))
    assert mailbox.sent == []


@pytest.mark.parametrize(
    "payload",
    [
        {"user_id": "alice", "template": "no_such_template", "params": {}},
        {
            "user_id": "alice",
            "template": "pin_reset",
            "params": {"token_sealed": ReversibleSealer().seal("123456")},
        },
    ],
    ids=["a template this build does not know", "a parameter this build's template needs"],
)
async def test_a_mail_of_another_build_is_retried_not_dead_lettered(
    payload: dict[str, object],
) -> None:
    """Mid-rollout a newer build's template (or an older build's event without a parameter
    this build's template needs) reaches this process: retried, for a process of the other
    build to deliver (review of 2026-12-05: it was dead-lettered at once)."""
    mailbox = Mailbox()
    handler = _handlers(mailbox)["mail.send"]
    with pytest.raises(UnknownToThisBuildError) as retried:
        await handler(_event(OutboxMessage("mail.send", payload, key="alice")))
    assert not isinstance(retried.value, PermanentDeliveryError)
    assert mailbox.sent == []


async def test_a_notification_wallet_refuses_is_dead_lettered_not_retried() -> None:
    """An event of wallet's own that wallet's checks refuse: no retry makes it valid (it was
    retried for up to an hour as a transient failure)."""
    handler = _handlers(Mailbox())["notification.create"]
    payload = {"user_id": str(uuid.uuid4()), "kind": "SECURITY", "title": "   ", "body": "b"}
    with pytest.raises(PermanentDeliveryError, match=r"notification refused: .*title"):
        await handler(_event(OutboxMessage("notification.create", payload, key="alice")))


async def test_a_notification_kind_of_another_build_is_retried_not_dead_lettered() -> None:
    """A newer build's kind reaches this process mid-rollout: retried, for a process that
    knows it (a review of the fix above found it dead-lettered as a refused notification)."""
    handler = _handlers(Mailbox())["notification.create"]
    payload = {"user_id": str(uuid.uuid4()), "kind": "LOYALTY_POINTS", "title": "t", "body": "b"}
    with pytest.raises(UnknownToThisBuildError) as retried:
        await handler(_event(OutboxMessage("notification.create", payload, key="alice")))
    assert not isinstance(retried.value, PermanentDeliveryError)


def test_a_mail_is_settled_as_soon_as_it_is_sent_not_with_its_round() -> None:
    """An SMTP server cannot dedupe by event id: a mail sent but left unsettled by its round's
    later failure was mailed again after the lease (review of 2026-12-06). Notifications are
    deduped by wallet, and settle with their round."""
    handlers = _handlers(Mailbox())
    assert isinstance(handlers["mail.send"], SettledOnReturn)
    assert not isinstance(handlers["notification.create"], SettledOnReturn)
