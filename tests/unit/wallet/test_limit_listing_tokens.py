"""AdminListLimits' page tokens carry the row's `position` alone ({"p": n}): a token of the
older order ({"c": updated_at, "n": position}) or a position that is no row's is refused
as INVALID_ARGUMENT on `page_token` before anything is read; a token of ours pages on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.unit.wallet.wallet_world import World, key
from vaultpay.wallet.v1 import wallet_pb2
from vaultpay_common.context import METHOD, PRINCIPAL, Principal, Role
from vaultpay_common.errors import ValidationError
from vaultpay_common.pagination import PageScope, PageTokens
from vaultpay_wallet.domain.limits import LimitAction
from vaultpay_wallet.entrypoints.servicers_staff import WalletAdminServicer
from vaultpay_wallet.service_layer.commands import (
    AdminSetWalletLimits,
    AmountInput,
    LimitValuesInput,
)

LIST = "/vaultpay.wallet.v1.WalletAdminService/AdminListLimits"
REVIEWER = "0b0b0b0b-0000-4000-8000-00000000bbbb"
TOKENS = PageTokens(bytes(range(32)))
NO_FILTERS = {"wallet": "", "source": None, "action": None}
_NOTHING: Any = None


@contextmanager
def _as_reviewer() -> Iterator[None]:
    principal = PRINCIPAL.set(Principal(subject=REVIEWER, role=Role.ADMIN))
    method = METHOD.set(LIST)
    try:
        yield
    finally:
        METHOD.reset(method)
        PRINCIPAL.reset(principal)


async def _page(servicer: WalletAdminServicer, token: str) -> wallet_pb2.AdminListLimitsResponse:
    request = wallet_pb2.AdminListLimitsRequest(page_size=1, page_token=token)
    with _as_reviewer():
        return await servicer.AdminListLimits(request, _NOTHING)


def _token(position: dict[str, Any]) -> str:
    return TOKENS.encode(position, NO_FILTERS, scope=PageScope(LIST, REVIEWER))


@pytest.mark.parametrize(
    "position",
    [
        {"c": "2026-12-05T10:00:00+00:00", "n": 7},  # the older order's
        {"p": 0},
        {"p": -1},
        {"p": "7"},
        {"p": True},
        {"p": 2**63},
    ],
    ids=["older order", "zero", "negative", "text", "bool", "past bigint"],
)
async def test_a_token_without_a_usable_position_is_refused_naming_page_token(
    position: dict[str, Any],
) -> None:
    servicer = WalletAdminServicer(_NOTHING, World().limits, _NOTHING, _NOTHING, TOKENS)
    with pytest.raises(ValidationError) as refused:
        await _page(servicer, _token(position))
    assert [v.field for v in refused.value.violations] == ["page_token"]


async def test_pages_go_on_by_position_after_an_edit() -> None:
    world = World()
    wallets = [(await world.open_wallet(f"user-{i}")).id for i in range(3)]
    for i, wallet_id in enumerate(wallets):
        await world.limits.admin_set_wallet_limits(
            AdminSetWalletLimits(
                "staff",
                Role.ADMIN,
                wallet_id,
                (LimitValuesInput(LimitAction.SEND, daily=AmountInput("INR", 1_000 + i)),),
                "review",
                key("staff"),
            )
        )
    servicer = WalletAdminServicer(_NOTHING, world.limits, _NOTHING, _NOTHING, TOKENS)
    first = await _page(servicer, "")
    assert [o.wallet_id for o in first.overrides] == [wallets[2]]
    await world.limits.admin_set_wallet_limits(  # an unlisted one edited: it keeps its place
        AdminSetWalletLimits(
            "staff",
            Role.ADMIN,
            wallets[0],
            (LimitValuesInput(LimitAction.SEND, daily=AmountInput("INR", 9_000)),),
            "raise",
            key("staff"),
        )
    )
    second = await _page(servicer, first.next_page_token)
    third = await _page(servicer, second.next_page_token)
    assert [o.wallet_id for o in [*second.overrides, *third.overrides]] == [
        wallets[1],
        wallets[0],
    ]
    assert third.overrides[0].values.daily.amount_minor == 9_000
    assert third.next_page_token == ""
