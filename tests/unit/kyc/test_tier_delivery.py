"""The relay's tier handler on fakes: the events of one user arrive in any order (backoff, a
dead-letter replay), and the last one applied must not leave wallet below the tier held; a
retry that sends another tier than an earlier attempt is another request for wallet."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from tests.unit.kyc.kyc_world import World
from vaultpay_common.idempotency import canonical_request_id
from vaultpay_common.outbox import (
    DeliveryError,
    Handler,
    OutboxEvent,
    PermanentDeliveryError,
    UnknownToThisBuildError,
)
from vaultpay_kyc.adapters.deliveries import kyc_outbox_handlers, tier_request_id
from vaultpay_kyc.domain.model import KycTier, highest_tier
from vaultpay_kyc.service_layer.events import TIER_TOPIC


class RecordingWallet:
    """Sets exactly the tier it is given (wallet's SetKycTier never lowers one; this fake
    does, so kyc's own rule, the tier held at delivery, is what these tests check)."""

    def __init__(self) -> None:
        self.tiers: dict[str, KycTier] = {}
        self.calls: list[tuple[str, KycTier, str]] = []

    async def set_kyc_tier(
        self, request_id: str, user_id: str, tier: KycTier, submission_id: str
    ) -> None:
        self.calls.append((request_id, tier, submission_id))
        self.tiers[user_id] = tier

    async def create_notification(self, event_id: str, user_id: str, title: str, body: str) -> None:
        return None


def _tier_events(world: World) -> list[OutboxEvent]:
    return [
        OutboxEvent(
            event_id,
            "kyc",
            message.topic,
            message.key,
            message.payload,
            attempts=1,
            created_at=datetime(2026, 12, 3, tzinfo=UTC),
        )
        for event_id, message in world.uow.outbox.events.items()
        if message.topic == TIER_TOPIC
    ]


async def test_a_basic_event_delivered_after_the_full_one_does_not_lower_the_wallet() -> None:
    world = World()
    first = await world.submit()
    await world.approve(first, tier=KycTier.BASIC)
    upgrade = await world.submit(number="ZZZPZ9999Z")
    await world.approve(upgrade, tier=KycTier.FULL)
    basic, full = _tier_events(world)
    assert (basic.payload["kyc_tier"], full.payload["kyc_tier"]) == ("BASIC", "FULL")

    wallet = RecordingWallet()
    set_tier = kyc_outbox_handlers(wallet, world.review.held_tier)[TIER_TOPIC]
    await set_tier(full)
    await set_tier(basic)  # late: its first attempts failed, or a dead letter replayed
    assert wallet.tiers == {"alice": KycTier.FULL}
    # Each call carries its own event's key and submission, for wallet's dedupe and audit; the
    # late one's key names the tier it sends (FULL, above its event's BASIC).
    assert [(c[0], c[2]) for c in wallet.calls] == [
        (full.event_id, upgrade.id),
        (tier_request_id(basic.event_id, KycTier.BASIC, KycTier.FULL), first.id),
    ]


async def _approved_at_basic(wallet: RecordingWallet) -> tuple[World, Handler, OutboxEvent]:
    """Alice approved at BASIC: her world, the tier handler delivering to `wallet`, the event."""
    world = World()
    first = await world.submit()
    await world.approve(first, tier=KycTier.BASIC)
    (basic,) = _tier_events(world)
    return world, kyc_outbox_handlers(wallet, world.review.held_tier)[TIER_TOPIC], basic


async def test_events_in_order_set_each_tier_as_granted() -> None:
    wallet = RecordingWallet()
    _, set_tier, basic = await _approved_at_basic(wallet)
    await set_tier(basic)
    assert wallet.tiers == {"alice": KycTier.BASIC}


class IdempotentWallet(RecordingWallet):
    """Wallet's SetKycTier as kyc sees it through GrpcWalletEvents: one request per
    request_id (the same again replays; another is FAILED_PRECONDITION IDEMPOTENCY_KEY_REUSED,
    which dead-letters), never lowering a tier. `lose_reply` applies a call and then fails it
    as a timeout does, so the relay retries a call wallet has stored."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: dict[str, tuple[str, KycTier, str]] = {}
        self.lose_reply = False

    async def set_kyc_tier(
        self, request_id: str, user_id: str, tier: KycTier, submission_id: str
    ) -> None:
        canonical_request_id(request_id)  # wallet's check of the field
        request = (user_id, tier, submission_id)
        stored = self.requests.setdefault(request_id, request)
        if stored != request:
            raise PermanentDeliveryError("wallet SetKycTier failed: FAILED_PRECONDITION")
        if stored is request:  # new: applied; a replay changes nothing
            self.calls.append((request_id, tier, submission_id))
            self.tiers[user_id] = highest_tier((self.tiers.get(user_id, KycTier.NONE), tier))
        if self.lose_reply:
            raise DeliveryError("wallet SetKycTier failed: DEADLINE_EXCEEDED")


async def test_a_retry_after_an_upgrade_is_a_new_request_and_settles() -> None:
    """The BASIC event's first attempt reached wallet but its reply was lost; by its retry the
    user holds FULL. The retry sends FULL, which must not reuse the BASIC call's key (wallet
    would refuse it, and the event would be dead-lettered with the wallet right)."""
    wallet = IdempotentWallet()
    world, set_tier, basic = await _approved_at_basic(wallet)
    wallet.lose_reply = True
    with pytest.raises(DeliveryError):
        await set_tier(basic)
    wallet.lose_reply = False
    assert wallet.tiers == {"alice": KycTier.BASIC}

    upgrade = await world.submit(number="ZZZPZ9999Z")
    await world.approve(upgrade, tier=KycTier.FULL)
    full = next(e for e in _tier_events(world) if e.event_id != basic.event_id)
    await set_tier(full)
    await set_tier(basic)  # the retry: settles, not PermanentDeliveryError
    await set_tier(basic)  # and again (its reply lost too): the same key and request, replayed
    assert wallet.tiers == {"alice": KycTier.FULL}
    stale_full = tier_request_id(basic.event_id, KycTier.BASIC, KycTier.FULL)
    assert [c[0] for c in wallet.calls] == [basic.event_id, full.event_id, stale_full]


def test_a_tier_request_id_is_one_valid_uuid_per_event_and_tier_sent() -> None:
    event_id = str(uuid.uuid4())
    assert tier_request_id(event_id, KycTier.BASIC, KycTier.BASIC) == event_id
    assert tier_request_id(event_id, KycTier.FULL, KycTier.FULL) == event_id
    derived = tier_request_id(event_id, KycTier.BASIC, KycTier.FULL)
    assert derived == tier_request_id(event_id, KycTier.BASIC, KycTier.FULL)
    assert canonical_request_id(derived) == derived  # wallet's rule: lower-case hyphenated UUID
    assert derived != event_id
    assert derived != tier_request_id(str(uuid.uuid4()), KycTier.BASIC, KycTier.FULL)


async def test_a_tier_of_another_build_is_retried_not_dead_lettered() -> None:
    """Mid-rollout a newer build's tier reaches this process: retried for a process that
    knows it (review of 2026-12-05: dead-lettered at once, and with it what lets an approved
    user move money)."""
    world = World()
    set_tier = kyc_outbox_handlers(RecordingWallet(), world.review.held_tier)[TIER_TOPIC]
    payload = {"kyc_tier": "PLATINUM", "user_id": "alice", "submission_id": str(uuid.uuid4())}
    event = OutboxEvent(
        str(uuid.uuid4()), "kyc", TIER_TOPIC, "alice", payload, 1, datetime(2026, 12, 5, tzinfo=UTC)
    )
    with pytest.raises(UnknownToThisBuildError) as retried:
        await set_tier(event)
    assert not isinstance(retried.value, PermanentDeliveryError)
