"""The relay's tier handler on fakes: the events of one user arrive in any order (backoff, a
dead-letter replay), and the last one applied must not leave wallet below the tier held."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.unit.kyc.kyc_world import World
from vaultpay_common.outbox import OutboxEvent
from vaultpay_kyc.adapters.deliveries import kyc_outbox_handlers
from vaultpay_kyc.domain.model import KycTier
from vaultpay_kyc.service_layer.events import TIER_TOPIC


class RecordingWallet:
    """Sets exactly the tier it is given (wallet's SetKycTier never lowers one; this fake
    does, so kyc's own rule, the tier held at delivery, is what these tests check)."""

    def __init__(self) -> None:
        self.tiers: dict[str, KycTier] = {}
        self.calls: list[tuple[str, KycTier, str]] = []

    async def set_kyc_tier(
        self, event_id: str, user_id: str, tier: KycTier, submission_id: str
    ) -> None:
        self.calls.append((event_id, tier, submission_id))
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
    # Each call still carries its own event id and submission, for wallet's dedupe and audit.
    assert [(c[0], c[2]) for c in wallet.calls] == [
        (full.event_id, upgrade.id),
        (basic.event_id, first.id),
    ]


async def test_events_in_order_set_each_tier_as_granted() -> None:
    world = World()
    first = await world.submit()
    await world.approve(first, tier=KycTier.BASIC)
    wallet = RecordingWallet()
    set_tier = kyc_outbox_handlers(wallet, world.review.held_tier)[TIER_TOPIC]
    (basic,) = _tier_events(world)
    await set_tier(basic)
    assert wallet.tiers == {"alice": KycTier.BASIC}
