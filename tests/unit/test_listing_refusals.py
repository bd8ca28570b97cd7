"""Every staff listing names all its bad fields in one refusal, the page size among them: a
client is not left fixing one field per round trip (review of 2026-12-04, third: each used
to stop at the first). The filters are read before the servicer asks anything else, so
these call the servicers with no service behind them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from vaultpay.auth.v1 import auth_pb2
from vaultpay.kyc.v1 import kyc_pb2
from vaultpay.wallet.v1 import wallet_pb2
from vaultpay_auth.entrypoints.servicers import AuthAdminServicer
from vaultpay_common.context import METHOD, PRINCIPAL, Principal, Role
from vaultpay_common.errors import ValidationError
from vaultpay_common.pagination import PageTokens, SliceOf
from vaultpay_kyc.entrypoints.servicers import KycAdminServicer
from vaultpay_wallet.entrypoints.servicers_staff import WalletAdminServicer
from vaultpay_wallet.service_layer.results import LimitOverridePage

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


async def test_admin_list_limits_checks_the_wallet_id_as_every_wallet_rpc_does() -> None:
    """Review of 2026-12-05: the filter was only upper-cased, so any text was a filter (and went
    into the listing's audit row); AdminListTransactions refuses it naming wallet_id."""
    servicer = WalletAdminServicer(_NOTHING, _NOTHING, _NOTHING, _NOTHING, _NOTHING)
    for wallet_id in ("not-a-wallet", "VPY-7K3M9Q\u202e", "x" * 100_000):
        request = wallet_pb2.AdminListLimitsRequest(page_size=-1, wallet_id=wallet_id)
        assert await _fields_named(servicer.AdminListLimits(request, _NOTHING)) == [
            "page_size",
            "wallet_id",
        ]


class _Listed:
    """A use case that lists nothing: records the filters it was asked for."""

    def __init__(self) -> None:
        self.filters: list[Any] = []

    async def admin_list_limits(self, flt: Any, after: Any, limit: int, *, viewer: Any) -> Any:
        self.filters.append(flt)
        return LimitOverridePage((), False)

    async def list(self, query: Any, before: Any, limit: int, *, viewer: Any) -> Any:
        self.filters.append(query)
        return SliceOf((), False)


@pytest.fixture
def staff_calling() -> Iterator[None]:
    principal = PRINCIPAL.set(Principal(subject=str(uuid.uuid4()), role=Role.ADMIN))
    method = METHOD.set("/vaultpay.wallet.v1.WalletAdminService/List")
    yield
    PRINCIPAL.reset(principal)
    METHOD.reset(method)


@pytest.mark.usefixtures("staff_calling")
async def test_admin_list_limits_takes_a_wallet_id_in_any_case() -> None:
    limits = _Listed()
    service: Any = limits
    servicer = WalletAdminServicer(_NOTHING, service, _NOTHING, _NOTHING, PageTokens(b"k" * 32))
    for wallet_id in ("vpy-7k3m9q", ""):
        request = wallet_pb2.AdminListLimitsRequest(wallet_id=wallet_id)
        await servicer.AdminListLimits(request, _NOTHING)
    assert [flt.wallet_id for flt in limits.filters] == ["VPY-7K3M9Q", ""]


@pytest.mark.usefixtures("staff_calling")
async def test_list_audit_events_refuses_bad_filters_before_the_read_it_audits() -> None:
    audit = _Listed()
    service: Any = audit
    servicer = WalletAdminServicer(_NOTHING, _NOTHING, _NOTHING, service, PageTokens(b"k" * 32))
    request = wallet_pb2.ListAuditEventsRequest(
        actor_id="\u202e" + "a" * 1_000_000, action="Wallet.Frozen", target_id="VPY-7K3M9Q\u2028"
    )
    assert await _fields_named(servicer.ListAuditEvents(request, _NOTHING)) == [
        "actor_id",
        "action",
        "target_id",
    ]
    assert audit.filters == []  # the use case that writes `audit_events.listed` never ran
