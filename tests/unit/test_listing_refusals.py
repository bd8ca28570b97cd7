"""Every staff listing names all its bad fields in one refusal, the page size among them: a
client is not left fixing one field per round trip (review of 2026-12-04, third: each used
to stop at the first). The filters are read before the servicer asks anything else, so
these call the servicers with no service behind them."""

from __future__ import annotations

from typing import Any

import pytest

from vaultpay.auth.v1 import auth_pb2
from vaultpay.kyc.v1 import kyc_pb2
from vaultpay.wallet.v1 import wallet_pb2
from vaultpay_auth.entrypoints.servicers import AuthAdminServicer
from vaultpay_common.errors import ValidationError
from vaultpay_kyc.entrypoints.servicers import KycAdminServicer
from vaultpay_wallet.entrypoints.servicers_staff import WalletAdminServicer

_NOTHING: Any = None  # no service: the refusal comes before any is asked


async def _fields_named(call: Any) -> list[str]:
    with pytest.raises(ValidationError) as refused:
        await call
    return [v.field for v in refused.value.violations]


async def test_list_users() -> None:
    servicer = AuthAdminServicer(_NOTHING, _NOTHING)
    request = auth_pb2.ListUsersRequest(page_size=-1, role=99)  # type: ignore[arg-type]
    assert await _fields_named(servicer.ListUsers(request, _NOTHING)) == ["page_size", "role"]


async def test_admin_list_kyc_submissions() -> None:
    servicer = KycAdminServicer(_NOTHING, _NOTHING, _NOTHING)
    request = kyc_pb2.AdminListKycSubmissionsRequest(
        page_size=-1,
        status=99,  # type: ignore[arg-type]
        user_id="not a user id",
    )
    assert await _fields_named(servicer.AdminListKycSubmissions(request, _NOTHING)) == [
        "page_size",
        "status",
        "user_id",
    ]


async def test_admin_list_wallets() -> None:
    servicer = WalletAdminServicer(_NOTHING, _NOTHING, _NOTHING, _NOTHING, _NOTHING)
    request = wallet_pb2.AdminListWalletsRequest(
        page_size=-1,
        status=99,  # type: ignore[arg-type]
        kyc_tier=98,  # type: ignore[arg-type]
        user_id="not a user id",
    )
    assert await _fields_named(servicer.AdminListWallets(request, _NOTHING)) == [
        "page_size",
        "status",
        "kyc_tier",
        "user_id",
    ]


async def test_admin_list_limits() -> None:
    servicer = WalletAdminServicer(_NOTHING, _NOTHING, _NOTHING, _NOTHING, _NOTHING)
    request = wallet_pb2.AdminListLimitsRequest(
        page_size=-1,
        source=99,  # type: ignore[arg-type]
        action=98,  # type: ignore[arg-type]
    )
    assert await _fields_named(servicer.AdminListLimits(request, _NOTHING)) == [
        "page_size",
        "source",
        "action",
    ]
