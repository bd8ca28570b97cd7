"""RequestPinReset's bounds, on fakes: one mail a minute (a request while the code on its way is
under a minute old answers that code's expiry and writes nothing), five mails an hour
(PIN_RESET_RATE_LIMITED with a RetryInfo), the owner told in the app, and a mail whose code a
newer request superseded (or a reset used) dropped by the delivery, not sent.

Review of 9e17f85: anyone who registered with a victim's address, opened a wallet and set a PIN
could loop `POST /v1/wallets/me/pin:requestReset` and have VaultPay mail a code each time; each
request killed the previous code while its mail still went out, so an owner who tapped twice
could read the dead code first.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from google.rpc import error_details_pb2

from tests.fakes.wallet import ReversibleSealer
from tests.fakes.wallet_ip_notifications import FakeIpNotificationsUnitOfWork
from tests.unit.wallet.test_mail_templates import Contacts, Mailbox
from tests.unit.wallet.wallet_world import World, key
from vaultpay_common.errors import ErrorKind
from vaultpay_common.grpc.errors import status_for
from vaultpay_common.outbox import Handler, OutboxEvent, OutboxMessage
from vaultpay_wallet.adapters.deliveries import MAIL_TEMPLATES, wallet_outbox_handlers
from vaultpay_wallet.adapters.notification_hub import NotificationHub
from vaultpay_wallet.domain.errors import PinResetRateLimitedError
from vaultpay_wallet.domain.pin import (
    PIN_RESET_CAP_WINDOW,
    PIN_RESET_COOLDOWN,
    PIN_RESET_HOURLY_CAP,
    reset_cap_wait,
)
from vaultpay_wallet.service_layer.commands import ChangePin, RequestPinReset, ResetPin
from vaultpay_wallet.service_layer.notifications import NotificationService

SECOND = timedelta(seconds=1)


def _mails(world: World) -> list[OutboxMessage]:
    return world.uow.outbox.of_topic("mail.send")


def _code(world: World, mail: OutboxMessage) -> str:
    return world.sealer.open(mail.payload["params"]["token_sealed"])


def _security_titles(world: World) -> list[str]:
    return [
        m.payload["title"]
        for m in world.uow.outbox.of_topic("notification.create")
        if m.payload["kind"] == "SECURITY"
    ]


# ----- one mail a minute -------------------------------------------------------------------


async def test_a_request_within_a_minute_of_the_last_answers_its_expiry_and_writes_nothing() -> (
    None
):
    world = World()
    await world.open_wallet_with_pin()
    first = await world.pins.request_pin_reset(RequestPinReset("alice", key()))
    world.clock.advance(PIN_RESET_COOLDOWN - SECOND)
    before = world.snapshot()

    again = await world.pins.request_pin_reset(RequestPinReset("alice", key()))

    assert again == first  # the code on its way, the same expiry
    after = cast(tuple[object, ...], world.snapshot())
    # Nothing but the idempotent reply stored under the new request's key: no token, and no
    # mail, notice or audit row (the outbox and the audit entries, last).
    assert after[:5] == cast(tuple[object, ...], before)[:5]
    assert after[6:] == cast(tuple[object, ...], before)[6:]
    [mail] = _mails(world)
    await world.pins.reset_pin(ResetPin(_code(world, mail), "9753", "9753", key("anon")))


async def test_a_retry_of_the_request_answered_from_the_cooldown_replays_that_answer() -> None:
    world = World()
    await world.open_wallet_with_pin()
    first = await world.pins.request_pin_reset(RequestPinReset("alice", key()))
    world.clock.advance(SECOND)
    tapped_again = key()
    again = await world.pins.request_pin_reset(RequestPinReset("alice", tapped_again))
    world.clock.advance(PIN_RESET_COOLDOWN)  # past the minute: a new request would mint

    replayed = await world.pins.request_pin_reset(RequestPinReset("alice", tapped_again))

    assert replayed == again == first
    assert len(_mails(world)) == 1


async def test_a_minute_after_the_last_code_a_request_mints_a_new_one_and_kills_the_old() -> None:
    world = World()
    await world.open_wallet_with_pin()
    await world.pins.request_pin_reset(RequestPinReset("alice", key()))
    world.clock.advance(PIN_RESET_COOLDOWN)

    second = await world.pins.request_pin_reset(RequestPinReset("alice", key()))

    assert second.token_expires_at == world.clock.now() + timedelta(minutes=15)
    first_mail, second_mail = _mails(world)
    assert _code(world, first_mail) != _code(world, second_mail)


async def test_a_request_after_the_code_was_used_mints_at_once() -> None:
    """The cooldown waits for a code on its way, not for one already spent."""
    world = World()
    await world.open_wallet_with_pin()
    await world.pins.request_pin_reset(RequestPinReset("alice", key()))
    [mail] = _mails(world)
    await world.pins.reset_pin(ResetPin(_code(world, mail), "9753", "9753", key("anon")))
    world.clock.advance(SECOND)

    await world.pins.request_pin_reset(RequestPinReset("alice", key()))

    assert len(_mails(world)) == 2


# ----- five mails an hour ------------------------------------------------------------------


async def test_the_sixth_code_within_an_hour_is_refused_with_a_retry_info() -> None:
    world = World()
    await world.open_wallet_with_pin()
    started = world.clock.now()
    for _ in range(PIN_RESET_HOURLY_CAP):
        await world.pins.request_pin_reset(RequestPinReset("alice", key()))
        world.clock.advance(PIN_RESET_COOLDOWN)
    assert len(_mails(world)) == PIN_RESET_HOURLY_CAP
    before = world.snapshot()

    with pytest.raises(PinResetRateLimitedError) as refused:
        await world.pins.request_pin_reset(RequestPinReset("alice", key()))

    error = refused.value
    assert (error.kind, error.reason) == (ErrorKind.RESOURCE_EXHAUSTED, "PIN_RESET_RATE_LIMITED")
    waits = (started + PIN_RESET_CAP_WINDOW - world.clock.now()).total_seconds()
    assert error.retry_after_seconds == waits  # when the first code leaves the hour
    assert world.snapshot() == before  # no token, mail, notice, audit row or stored reply
    _, status = status_for(error, "vaultpay.wallet")
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in status.details)
    assert retry.retry_delay.seconds == waits

    world.clock.advance(timedelta(seconds=waits))  # the first code leaves the hour
    await world.pins.request_pin_reset(RequestPinReset("alice", key()))
    assert len(_mails(world)) == PIN_RESET_HOURLY_CAP + 1


async def test_at_the_cap_a_double_tap_still_answers_the_code_on_its_way() -> None:
    """The minute's rule comes first: the fifth code's own double tap is not refused."""
    world = World()
    await world.open_wallet_with_pin()
    for _ in range(PIN_RESET_HOURLY_CAP - 1):
        await world.pins.request_pin_reset(RequestPinReset("alice", key()))
        world.clock.advance(PIN_RESET_COOLDOWN)
    fifth = await world.pins.request_pin_reset(RequestPinReset("alice", key()))
    world.clock.advance(SECOND)

    assert await world.pins.request_pin_reset(RequestPinReset("alice", key())) == fifth


async def test_the_cap_counts_each_users_codes_apart() -> None:
    world = World()
    await world.open_wallet_with_pin("alice")
    await world.open_wallet_with_pin("bob")
    for _ in range(PIN_RESET_HOURLY_CAP):
        await world.pins.request_pin_reset(RequestPinReset("alice", key()))
        world.clock.advance(PIN_RESET_COOLDOWN)
    with pytest.raises(PinResetRateLimitedError):
        await world.pins.request_pin_reset(RequestPinReset("alice", key()))

    await world.pins.request_pin_reset(RequestPinReset("bob", key("bob")))


def test_the_wait_ends_when_enough_codes_have_left_the_hour() -> None:
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    minute = timedelta(minutes=1)
    assert reset_cap_wait([now - 10 * minute] * (PIN_RESET_HOURLY_CAP - 1), now) is None
    minted = [now - k * minute for k in (50, 40, 30, 20, 10, 5)]  # six (an older build's)
    assert reset_cap_wait(minted, now) == 20 * 60  # two must go: the one of 40 minutes ago
    assert reset_cap_wait([now - PIN_RESET_CAP_WINDOW] * 9, now) is None  # out of the hour
    almost = [now - PIN_RESET_CAP_WINDOW + timedelta(milliseconds=1)] * PIN_RESET_HOURLY_CAP
    assert reset_cap_wait(almost, now) == 1  # never "retry in 0 s"


# ----- the owner is told ------------------------------------------------------------------


async def test_a_reset_request_tells_the_owner_in_the_app_once() -> None:
    world = World()
    await world.open_wallet_with_pin()
    k = key()
    await world.pins.request_pin_reset(RequestPinReset("alice", k))
    await world.pins.request_pin_reset(RequestPinReset("alice", k))  # a retry
    world.clock.advance(SECOND)
    await world.pins.request_pin_reset(RequestPinReset("alice", key()))  # within the minute

    [notice] = [
        m.payload
        for m in world.uow.outbox.of_topic("notification.create")
        if m.payload["title"] == "PIN reset requested"
    ]
    assert notice["kind"] == "SECURITY"
    assert "change your password" in notice["body"] and "contact support" in notice["body"]
    [mail] = _mails(world)
    assert _code(world, mail) not in repr(notice)


def test_the_reset_mail_does_not_tell_an_owner_who_did_not_ask_to_ignore_it() -> None:
    """Only a signed-in session can ask: an unasked-for mail means someone holds one."""
    _, body = MAIL_TEMPLATES["pin_reset"]
    assert "ignore this mail" not in body
    assert "change your password" in body and "signs out every other session" in body
    assert "support" in body


# ----- a superseded code is not mailed ------------------------------------------------------


class _NoIpConfirmations:
    """Only PIN reset mails here."""

    async def confirmation_code_usable(self, code: str) -> bool:
        raise AssertionError("no IP confirmation mail is delivered in these tests")


def _deliver_with(world: World, mailbox: Mailbox) -> Handler:
    notifications = NotificationService(
        FakeIpNotificationsUnitOfWork, NotificationHub(), world.clock
    )
    handlers = wallet_outbox_handlers(
        Contacts(),
        mailbox,
        ReversibleSealer(),
        notifications,
        reset_codes=world.pins,
        ip_codes=_NoIpConfirmations(),
        clock=world.clock,
    )
    return handlers["mail.send"]


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


async def test_a_mail_whose_code_a_newer_request_superseded_is_dropped_not_sent() -> None:
    """The relay delivers several mails at once, and retries later: the first request's mail
    can go out after the second's. Only the code that works is mailed."""
    world = World()
    await world.open_wallet_with_pin()
    await world.pins.request_pin_reset(RequestPinReset("alice", key()))
    world.clock.advance(PIN_RESET_COOLDOWN)
    await world.pins.request_pin_reset(RequestPinReset("alice", key()))
    first, second = _mails(world)
    mailbox = Mailbox()
    deliver = _deliver_with(world, mailbox)

    await deliver(_event(second))
    await deliver(_event(first))  # delivered as far as the relay knows: no retry

    [(_, _, body)] = mailbox.sent
    assert _code(world, second) in body
    await world.pins.reset_pin(ResetPin(_code(world, second), "9753", "9753", key("anon")))


async def test_a_mail_whose_code_was_used_or_revoked_is_dropped_not_sent() -> None:
    world = World()
    await world.open_wallet_with_pin()
    await world.pins.request_pin_reset(RequestPinReset("alice", key()))
    [used] = _mails(world)
    await world.pins.reset_pin(ResetPin(_code(world, used), "9753", "9753", key("anon")))
    world.clock.advance(PIN_RESET_COOLDOWN)
    await world.pins.request_pin_reset(RequestPinReset("alice", key()))
    [_, revoked] = _mails(world)
    await world.pins.change_pin(ChangePin("alice", "9753", "8642", "8642", key()))
    mailbox = Mailbox()
    deliver = _deliver_with(world, mailbox)

    await deliver(_event(used))  # a retry of a mail whose code reset the PIN
    await deliver(_event(revoked))  # a change of the PIN revoked it

    assert mailbox.sent == []
