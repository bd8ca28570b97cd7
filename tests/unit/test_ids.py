"""One id parser for every service (review finding 4): ids that are UUIDs reach the use cases
and the database in one canonical form, and anything else is INVALID_ARGUMENT naming the field,
never a database error answered as INTERNAL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from vaultpay.auth.v1 import auth_pb2
from vaultpay.type.v1 import kyc_tier_pb2, role_pb2
from vaultpay.wallet.v1 import wallet_pb2
from vaultpay_auth.entrypoints.servicers import AuthAdminServicer, AuthInternalServicer
from vaultpay_common.context import PRINCIPAL, Principal, Role
from vaultpay_common.errors import ValidationError
from vaultpay_common.ids import parse_optional_uuid, parse_uuid
from vaultpay_common.pagination import PageTokens
from vaultpay_wallet.entrypoints.servicers import WalletServicer
from vaultpay_wallet.entrypoints.servicers_staff import WalletAdminServicer, WalletInternalServicer

CANONICAL = "0b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6e"

NOT_CANONICAL = [
    "{0b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6e}",
    "urn:uuid:0b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6e",
    "0b5f7c1e8a3d4f2b9c6e1d2a3b4c5d6e",  # no hyphens
    " 0b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6e",
    "0b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6e\n",
    "0b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6",  # one digit short
    "0b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6e0",
    "0b5f7c1e-8a3d4-f2b-9c6e-1d2a3b4c5d6e",  # hyphens in the wrong place
    "0b5f7c1g-8a3d-4f2b-9c6e-1d2a3b4c5d6e",  # not hex
    "\uff10b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6e",  # a full-width digit
    "0b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6\u0000",
]


def test_a_canonical_uuid_is_returned_unchanged() -> None:
    assert parse_uuid(CANONICAL, "user_id") == CANONICAL


def test_upper_case_hex_is_accepted_and_lowered() -> None:
    assert parse_uuid(CANONICAL.upper(), "user_id") == CANONICAL


@pytest.mark.parametrize("value", NOT_CANONICAL)
def test_every_other_spelling_is_invalid_argument_on_the_field(value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_uuid(value, "session_id")
    assert [v.field for v in caught.value.violations] == ["session_id"]


@pytest.mark.parametrize("value", [None, 42, b"0b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6e", ["x"]])
def test_values_that_are_not_text_are_invalid(value: Any) -> None:
    with pytest.raises(ValidationError):
        parse_uuid(value, "user_id")


def test_an_empty_id_is_required() -> None:
    with pytest.raises(ValidationError, match="user_id: is required"):
        parse_uuid("", "user_id")


def test_an_optional_id_may_be_empty_but_not_malformed() -> None:
    assert parse_optional_uuid("", "user_id") == ""
    assert parse_optional_uuid(CANONICAL.upper(), "user_id") == CANONICAL
    with pytest.raises(ValidationError):
        parse_optional_uuid("{" + CANONICAL + "}", "user_id")


# ----- the servicers parse ids before any use case sees them --------------------------------


class Untouchable:
    """A use case that must not be reached: the id is refused first."""

    def __getattr__(self, name: str) -> Any:
        def called(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"the use case was called ({name}) with an unparsed id")

        return called


@pytest.fixture
def as_admin() -> Iterator[None]:
    token = PRINCIPAL.set(Principal(str(uuid.uuid4()), Role.SUPER_ADMIN, str(uuid.uuid4())))
    yield
    PRINCIPAL.reset(token)


BRACED = "{" + CANONICAL + "}"
URN = "urn:uuid:" + CANONICAL
TOKENS = PageTokens(b"k" * 32)
_ANY: Any = Untouchable()


def _auth_admin() -> AuthAdminServicer:
    return AuthAdminServicer(_ANY, TOKENS)


def _wallet_user() -> WalletServicer:
    return WalletServicer(_ANY, _ANY, _ANY, _ANY, _ANY, TOKENS, fingerprint_key=bytes(32))


def _wallet_admin() -> WalletAdminServicer:
    return WalletAdminServicer(_ANY, _ANY, _ANY, _ANY, TOKENS)


def _wallet_internal() -> WalletInternalServicer:
    return WalletInternalServicer(_ANY, _ANY, _ANY, _ANY, _ANY, fingerprint_key=bytes(32))


CALLS: dict[str, Any] = {
    "auth GetUser": lambda v: _auth_admin().GetUser(auth_pb2.GetUserRequest(user_id=v), _ANY),
    "auth SetUserRole": lambda v: _auth_admin().SetUserRole(
        auth_pb2.SetUserRoleRequest(user_id=v, role=role_pb2.ROLE_MODERATOR, reason="r"), _ANY
    ),
    "auth DeactivateUser": lambda v: _auth_admin().DeactivateUser(
        auth_pb2.DeactivateUserRequest(user_id=v, reason="r"), _ANY
    ),
    "auth ReactivateUser": lambda v: _auth_admin().ReactivateUser(
        auth_pb2.ReactivateUserRequest(user_id=v, reason="r"), _ANY
    ),
    "auth GetUserContact": lambda v: AuthInternalServicer(_ANY, _ANY, _ANY, _ANY).GetUserContact(
        auth_pb2.GetUserContactRequest(user_id=v), _ANY
    ),
    "auth GetUserRole": lambda v: AuthInternalServicer(_ANY, _ANY, _ANY, _ANY).GetUserRole(
        auth_pb2.GetUserRoleRequest(user_id=v), _ANY
    ),
    "wallet MarkNotificationRead": lambda v: _wallet_user().MarkNotificationRead(
        wallet_pb2.MarkNotificationReadRequest(notification_id=v), _ANY
    ),
    "wallet AdminListWallets": lambda v: _wallet_admin().AdminListWallets(
        wallet_pb2.AdminListWalletsRequest(user_id=v), _ANY
    ),
    "wallet VerifyTransferPin": lambda v: _wallet_internal().VerifyTransferPin(
        wallet_pb2.VerifyTransferPinRequest(user_id=v, pin="1234", request_id=str(uuid.uuid4())),
        _ANY,
    ),
    "wallet CheckIpTrust": lambda v: _wallet_internal().CheckIpTrust(
        wallet_pb2.CheckIpTrustRequest(
            request_id=str(uuid.uuid4()), user_id=v, client_ip="203.0.113.9"
        ),
        _ANY,
    ),
    "wallet SetKycTier": lambda v: _wallet_internal().SetKycTier(
        wallet_pb2.SetKycTierRequest(
            user_id=v, kyc_tier=kyc_tier_pb2.KYC_TIER_FULL, request_id=str(uuid.uuid4())
        ),
        _ANY,
    ),
    "wallet CreateNotification": lambda v: _wallet_internal().CreateNotification(
        wallet_pb2.CreateNotificationRequest(
            request_id="evt-1", user_id=v, title="t", kind=wallet_pb2.NOTIFICATION_KIND_SECURITY
        ),
        _ANY,
    ),
    "wallet CreateNotifications": lambda v: _wallet_internal().CreateNotifications(
        wallet_pb2.CreateNotificationsRequest(
            notifications=[
                wallet_pb2.CreateNotificationRequest(
                    request_id="evt-1", user_id=v, title="t", kind=wallet_pb2.NOTIFICATION_KIND_KYC
                )
            ]
        ),
        _ANY,
    ),
}


@pytest.mark.parametrize("value", [BRACED, URN, "not-a-uuid"])
@pytest.mark.parametrize("call", sorted(CALLS))
async def test_servicers_refuse_ids_that_are_not_canonical_uuids(
    call: str, value: str, as_admin: None
) -> None:
    with pytest.raises(ValidationError) as caught:
        await CALLS[call](value)
    field = caught.value.violations[0].field.removeprefix("notifications[0].")
    assert field in {"user_id", "notification_id"}
