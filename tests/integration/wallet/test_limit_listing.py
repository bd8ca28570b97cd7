"""AdminListLimits pages on a key no change moves, on real PostgreSQL with the real wallet
chain at its head: through the staff servicer (its page tokens) and the SQL repositories.

The listing was ordered on (updated_at, position) while AdminSetWalletLimits deleted and
inserted a wallet's admin overrides (a new updated_at and position) and SetMyLimit updated
updated_at in place: a compliance reviewer paging the ADMIN_OVERRIDE rows missed a wallet
whose limit another admin raised between two pages (the row jumped above the cursor), and a
user's own limit changed meanwhile did the same to the USER rows. It is now most recently
created first on `position`, which an edited row keeps.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes.wallet import FakeUsage, FakeUserRoles, FixedClock
from tests.integration.wallet.wallet_chain import migrate_to_head, new_key
from vaultpay.wallet.v1 import wallet_pb2
from vaultpay_common.context import METHOD, PRINCIPAL, Principal, Role
from vaultpay_common.db import create_engine
from vaultpay_common.errors import ValidationError
from vaultpay_common.pagination import PageScope, PageTokens
from vaultpay_devstack.postgres import Provisioned
from vaultpay_wallet.adapters import tables
from vaultpay_wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from vaultpay_wallet.domain.limits import LimitAction, LimitSource
from vaultpay_wallet.domain.model import KycTier
from vaultpay_wallet.entrypoints.convert import action_to_proto
from vaultpay_wallet.entrypoints.servicers_staff import WalletAdminServicer
from vaultpay_wallet.service_layer.commands import (
    AdminSetWalletLimits,
    AmountInput,
    CreateWallet,
    LimitValuesInput,
    SetKycTier,
    SetMyLimit,
)
from vaultpay_wallet.service_layer.internal import KycTierService
from vaultpay_wallet.service_layer.limits import LimitsService
from vaultpay_wallet.service_layer.wallets import WalletService

pytestmark = pytest.mark.integration

INR = "INR"
LIST = "/vaultpay.wallet.v1.WalletAdminService/AdminListLimits"
REVIEWER = "0b0b0b0b-0000-4000-8000-00000000aaaa"  # the compliance reviewer paging
FIRST_ADMIN, OTHER_ADMIN = "adm-first", "adm-other"
TOKENS = PageTokens(bytes(range(32)))
_NOTHING: Any = None  # the services AdminListLimits does not use


@pytest.fixture(scope="module")
async def engine(databases: Provisioned) -> AsyncIterator[AsyncEngine]:
    migrated = migrate_to_head(databases)
    engine = create_engine(migrated.app_dsn("wallet"), pool_size=4, application_name="limit-list")
    try:
        yield engine
    finally:
        await engine.dispose()


class _World:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.clock = FixedClock()
        uow = lambda: SqlWalletUnitOfWork(engine)  # noqa: E731
        factory: Any = uow
        roles = FakeUserRoles({FIRST_ADMIN: Role.ADMIN, OTHER_ADMIN: Role.ADMIN})
        self.limits = LimitsService(factory, self.clock, FakeUsage(), roles=roles)
        self.wallets = WalletService(factory, self.clock, self.limits)
        self.kyc = KycTierService(factory, self.clock)
        self.servicer = WalletAdminServicer(_NOTHING, self.limits, _NOTHING, _NOTHING, TOKENS)

    async def open_wallet(self, user: str) -> str:
        wallet = await self.wallets.create_wallet(CreateWallet(user, "Limits", "", new_key(user)))
        await self.kyc.set_kyc_tier(
            SetKycTier(user, KycTier.BASIC, "sub-1", new_key("service:kyc"))
        )
        return wallet.id

    async def admin_sets(self, actor: str, wallet_id: str, **daily: int) -> None:
        """`actor` sets the wallet's admin overrides to these daily limits, a minute later."""
        self.clock.advance(timedelta(minutes=1))
        entries = tuple(
            LimitValuesInput(LimitAction(action), daily=AmountInput(INR, amount))
            for action, amount in daily.items()
        )
        await self.limits.admin_set_wallet_limits(
            AdminSetWalletLimits(actor, Role.ADMIN, wallet_id, entries, "review", new_key(actor))
        )

    async def user_sets(self, user: str, daily: int) -> None:
        """The owner lowers their own send limit to `daily`, a minute later."""
        self.clock.advance(timedelta(minutes=1))
        await self.limits.set_my_limit(
            SetMyLimit(user, "send", None, AmountInput(INR, daily), None, new_key(user))
        )

    async def page(
        self, source: wallet_pb2.LimitSource.ValueType, token: str = "", *, wallet_id: str = ""
    ) -> wallet_pb2.AdminListLimitsResponse:
        request = wallet_pb2.AdminListLimitsRequest(
            page_size=2,
            page_token=token,
            source=source,
            wallet_id=wallet_id,
        )
        with _calling_as_reviewer():
            return await self.servicer.AdminListLimits(request, _NOTHING)

    async def positions(self, wallet_id: str) -> dict[tuple[str, str], int]:
        c = tables.wallet_limit_overrides.c
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(c.source, c.action, c.position).where(c.wallet_id == wallet_id)
            )
            return {(r.source, r.action): r.position for r in rows}


@contextmanager
def _calling_as_reviewer() -> Iterator[None]:
    principal = PRINCIPAL.set(Principal(subject=REVIEWER, role=Role.ADMIN))
    method = METHOD.set(LIST)
    try:
        yield
    finally:
        METHOD.reset(method)
        PRINCIPAL.reset(principal)


def _daily(override: wallet_pb2.LimitOverride) -> int:
    return int(override.values.daily.amount_minor)


@pytest.mark.parametrize("source", ["ADMIN_OVERRIDE", "USER"])
async def test_overrides_changed_between_pages_are_each_listed_once(
    engine: AsyncEngine, source: str
) -> None:
    """Five wallets' overrides of `source`, paged two at a time; after page 1 one listed
    wallet's and one not yet listed wallet's override change (another admin raises it, or
    the owner lowers their own). Every override is listed exactly once across the pages, the
    one changed before its page with its new value."""
    world = _World(engine)
    users = [f"list-{source.lower()}-{i}-{uuid.uuid4()}" for i in range(5)]
    wallet_ids = [await world.open_wallet(user) for user in users]
    for i, wallet_id in enumerate(wallet_ids):
        if source == "ADMIN_OVERRIDE":
            await world.admin_sets(FIRST_ADMIN, wallet_id, send=10_000 + i)
        else:
            await world.user_sets(users[i], 40_000 + i)
    proto_source = wallet_pb2.LimitSource.Value(f"LIMIT_SOURCE_{source}")

    first = await world.page(proto_source)
    listed_first = [o.wallet_id for o in first.overrides]
    assert listed_first == [wallet_ids[4], wallet_ids[3]]  # most recently created first
    assert first.next_page_token

    # One already listed (4) and one not yet listed (1) change between the pages.
    for i in (4, 1):
        if source == "ADMIN_OVERRIDE":
            await world.admin_sets(OTHER_ADMIN, wallet_ids[i], send=90_000 + i)
        else:
            await world.user_sets(users[i], 30_000 + i)

    shown = list(first.overrides)
    token = first.next_page_token
    while token:
        page = await world.page(proto_source, token)
        shown += page.overrides
        token = page.next_page_token
    # This test's own wallets (the module's database holds other tests' overrides too).
    listed = [o.wallet_id for o in shown if o.wallet_id in set(wallet_ids)]
    assert sorted(listed) == sorted(wallet_ids), listed  # each once: none missed, none twice
    assert listed == wallet_ids[::-1]  # the changes moved nothing
    changed = next(o for o in shown if o.wallet_id == wallet_ids[1])
    if source == "ADMIN_OVERRIDE":
        assert (_daily(changed), changed.set_by) == (90_001, OTHER_ADMIN)
    else:
        assert _daily(changed) == 30_001


async def test_an_edited_admin_override_keeps_its_position_and_a_dropped_one_goes(
    engine: AsyncEngine,
) -> None:
    """AdminSetWalletLimits updates an action set again in place (same position, new values,
    setter and reason), adds a new action after every existing row, and removes the actions
    left out; its audit row still names the set it replaced."""
    world = _World(engine)
    user = f"edit-{uuid.uuid4()}"
    wallet_id = await world.open_wallet(user)
    await world.admin_sets(FIRST_ADMIN, wallet_id, send=10_000, withdraw=20_000)
    before = await world.positions(wallet_id)
    assert set(before) == {("ADMIN_OVERRIDE", "send"), ("ADMIN_OVERRIDE", "withdraw")}

    await world.admin_sets(OTHER_ADMIN, wallet_id, send=15_000, top_up=5_000)
    after = await world.positions(wallet_id)
    assert set(after) == {("ADMIN_OVERRIDE", "send"), ("ADMIN_OVERRIDE", "top_up")}
    assert after[("ADMIN_OVERRIDE", "send")] == before[("ADMIN_OVERRIDE", "send")]
    assert after[("ADMIN_OVERRIDE", "top_up")] > max(before.values())

    admin = wallet_pb2.LimitSource.Value("LIMIT_SOURCE_ADMIN_OVERRIDE")
    listed = (await world.page(admin, wallet_id=wallet_id)).overrides
    assert [o.values.action for o in listed] == [
        action_to_proto(LimitAction.TOP_UP),  # the newest row
        action_to_proto(LimitAction.SEND),  # created before withdraw, listed in its place
    ]
    send = listed[1]
    assert (_daily(send), send.set_by, send.reason) == (15_000, OTHER_ADMIN, "review")
    assert send.update_time.ToDatetime(tzinfo=UTC) == world.clock.now()
    async with engine.connect() as conn:
        details = await conn.scalar(
            text(
                "SELECT details FROM audit_events WHERE action = 'wallet.limits_overridden'"
                " AND target_id = :w ORDER BY sequence DESC LIMIT 1"
            ),
            {"w": wallet_id},
        )
    assert details["limits"] == (
        "send:per_transaction=-,daily=15000,monthly=-; "
        "top_up:per_transaction=-,daily=5000,monthly=-"
    )
    assert set(details["replaced"].split("; ")) == {
        f"send:per_transaction=-,daily=10000,monthly=- by {FIRST_ADMIN}",
        f"withdraw:per_transaction=-,daily=20000,monthly=- by {FIRST_ADMIN}",
    }


async def test_a_page_token_of_the_older_order_is_refused_naming_page_token(
    engine: AsyncEngine,
) -> None:
    """A token minted by the older build ({"c": updated_at, "n": position}, signed with the
    same key, for the same call and filters) is INVALID_ARGUMENT on `page_token`, never read
    in the new order (nor a 500)."""
    world = _World(engine)
    admin = wallet_pb2.LimitSource.Value("LIMIT_SOURCE_ADMIN_OVERRIDE")
    older = TOKENS.encode(
        {"c": world.clock.now().isoformat(), "n": 7},
        {"wallet": "", "source": LimitSource.ADMIN_OVERRIDE, "action": None},
        scope=PageScope(LIST, REVIEWER),
    )
    with pytest.raises(ValidationError) as refused:
        await world.page(admin, older)
    assert [(v.field, v.description) for v in refused.value.violations] == [
        ("page_token", "is not a valid page token")
    ]
