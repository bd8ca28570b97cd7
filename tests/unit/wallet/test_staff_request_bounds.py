"""Review of 2026-12-05 (input validation): wallet's staff and internal RPCs judge what a
request's size alone shows before they convert its entries, and AdminSetWalletLimits names a
bad request_id with the request's other bad fields.

AdminSetWalletLimits converted every `limits` entry, then checked each: ~250,000 entries in a
1 MiB request held wallet's event loop for 2.3 s (every SendMoney's VerifyTransferPin waited).
CreateNotifications parsed every item before its 1-100 count was checked. These call the
servicers with the use cases on fakes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.wallet_ip_notifications import FakeClock, FakeIpNotificationsUnitOfWork
from tests.unit.wallet.wallet_world import World, key
from vaultpay.type.v1 import money_pb2
from vaultpay.wallet.v1 import wallet_pb2
from vaultpay_common.context import METHOD, PRINCIPAL, Principal, Role
from vaultpay_common.errors import ValidationError
from vaultpay_common.pagination import PageTokens
from vaultpay_wallet.adapters.notification_hub import NotificationHub
from vaultpay_wallet.domain.limits import LimitAction
from vaultpay_wallet.domain.model import KycTier
from vaultpay_wallet.entrypoints import servicers_staff
from vaultpay_wallet.entrypoints.convert import action_to_proto
from vaultpay_wallet.entrypoints.servicers_staff import WalletAdminServicer, WalletInternalServicer
from vaultpay_wallet.service_layer.commands import SetKycTier
from vaultpay_wallet.service_layer.notifications import (
    MAX_NOTIFICATIONS_PER_BATCH,
    NotificationService,
)

ADMIN = str(uuid.uuid4())
_ANY: Any = None


@pytest.fixture(autouse=True)
def _an_admin_calling() -> Iterator[None]:
    principal = PRINCIPAL.set(Principal(subject=ADMIN, role=Role.ADMIN, session_id="s"))
    method = METHOD.set("/vaultpay.wallet.v1.WalletAdminService/AdminSetWalletLimits")
    yield
    PRINCIPAL.reset(principal)
    METHOD.reset(method)


def _admin(world: World) -> WalletAdminServicer:
    return WalletAdminServicer(world.admin, world.limits, _ANY, _ANY, PageTokens(b"k" * 32))


def _entry(action: LimitAction, daily: int = 5_000) -> wallet_pb2.LimitValues:
    return wallet_pb2.LimitValues(
        action=action_to_proto(action),
        daily=money_pb2.Money(currency_code="INR", amount_minor=daily),
    )


class _Counted:
    """Counts the entries the servicer converts (`amount_input` runs three times each)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.calls = 0
        real = getattr(servicers_staff, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(servicers_staff, name, counted)


async def _refusal(call: Any) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as refused:
        await call
    return [(v.field, v.description) for v in refused.value.violations]


async def _basic_wallet(world: World) -> str:
    wallet = await world.open_wallet("alice")
    await world.kyc.set_kyc_tier(SetKycTier("alice", KycTier.BASIC, "sub-1", key("service:kyc")))
    return wallet.id


async def test_more_limit_entries_than_actions_are_refused_before_any_is_converted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    wallet_id = await _basic_wallet(world)
    converted = _Counted(monkeypatch, "amount_input")
    entries = [_entry(action) for action in LimitAction] * 10_000  # 30,000 entries
    request = wallet_pb2.AdminSetWalletLimitsRequest(
        request_id=str(uuid.uuid4()), wallet_id=wallet_id, limits=entries, reason="review"
    )
    before = world.snapshot()
    assert await _refusal(_admin(world).AdminSetWalletLimits(request, _ANY)) == [
        ("limits", f"must hold at most {len(LimitAction)} entries, one per action")
    ]
    assert converted.calls == 0
    assert world.snapshot() == before


async def test_one_entry_per_action_is_still_accepted() -> None:
    world = World()
    wallet_id = await _basic_wallet(world)
    request = wallet_pb2.AdminSetWalletLimitsRequest(
        request_id=str(uuid.uuid4()),
        wallet_id=wallet_id.lower(),
        limits=[_entry(action, 1_000 + n) for n, action in enumerate(LimitAction)],
        reason="review",
    )
    reply = await _admin(world).AdminSetWalletLimits(request, _ANY)
    assert sorted(limits.daily.amount.amount_minor for limits in reply.limits) == [
        1_000,
        1_001,
        1_002,
    ]


async def test_a_bad_request_id_is_named_with_every_other_bad_field() -> None:
    """README: AdminSetWalletLimits names every bad field of the request in one refusal. The
    request_id was refused alone, before the others were looked at."""
    world = World()
    too_many = [_entry(action) for action in LimitAction] + [_entry(LimitAction.SEND)]
    request = wallet_pb2.AdminSetWalletLimitsRequest(
        request_id="not-a-uuid", wallet_id="VPY-1", limits=too_many, reason=" "
    )
    named = await _refusal(_admin(world).AdminSetWalletLimits(request, _ANY))
    assert [field for field, _ in named] == ["request_id", "wallet_id", "reason", "limits"]
    assert world.roles.asked == []  # nor is auth asked


async def test_a_bad_request_id_is_named_with_the_entries_own_faults() -> None:
    world = World()
    wallet_id = await _basic_wallet(world)
    entries = [_entry(LimitAction.SEND, daily=0), wallet_pb2.LimitValues(action=99)]  # type: ignore[arg-type]
    request = wallet_pb2.AdminSetWalletLimitsRequest(
        request_id="00000000-0000-0000-0000-000000000000",
        wallet_id=wallet_id,
        limits=entries,
        reason="review",
    )
    named = await _refusal(_admin(world).AdminSetWalletLimits(request, _ANY))
    assert [field for field, _ in named] == [
        "request_id",
        "limits[0].daily.amount_minor",
        "limits[1].action",
        "limits[1]",
    ]


# --- CreateNotifications (internal: transfer's outbox relay) --------------------------------


def _internal() -> WalletInternalServicer:
    hub = NotificationHub(max_streams_per_user=5, buffer_size=8)
    notes = NotificationService(lambda: FakeIpNotificationsUnitOfWork(hub), hub, FakeClock())
    return WalletInternalServicer(_ANY, _ANY, _ANY, _ANY, notes, fingerprint_key=b"k" * 32)


def _item(user_id: str = "") -> wallet_pb2.CreateNotificationRequest:
    return wallet_pb2.CreateNotificationRequest(
        request_id=str(uuid.uuid4()),
        user_id=user_id or str(uuid.uuid4()),
        kind=wallet_pb2.NOTIFICATION_KIND_MONEY_RECEIVED,
        title="Money in",
        body="body",
    )


async def test_a_batch_over_the_bound_is_refused_on_its_count_before_any_item_is_parsed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed = _Counted(monkeypatch, "notification_commands")
    # Items each bad on their own: they were parsed (and named, one violation each) first.
    items = [_item("not a user id") for _ in range(MAX_NOTIFICATIONS_PER_BATCH * 100)]
    request = wallet_pb2.CreateNotificationsRequest(notifications=items)
    assert await _refusal(_internal().CreateNotifications(request, _ANY)) == [
        ("notifications", f"must hold 1 to {MAX_NOTIFICATIONS_PER_BATCH} items")
    ]
    assert parsed.calls == 0
    empty = wallet_pb2.CreateNotificationsRequest()
    assert await _refusal(_internal().CreateNotifications(empty, _ANY)) == [
        ("notifications", f"must hold 1 to {MAX_NOTIFICATIONS_PER_BATCH} items")
    ]


async def test_a_full_batch_is_still_delivered() -> None:
    items = [_item() for _ in range(MAX_NOTIFICATIONS_PER_BATCH)]
    request = wallet_pb2.CreateNotificationsRequest(notifications=items)
    reply = await _internal().CreateNotifications(request, _ANY)
    assert len(reply.notifications) == MAX_NOTIFICATIONS_PER_BATCH
