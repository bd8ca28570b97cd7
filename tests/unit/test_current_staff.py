"""`current_staff`: the one reading of the calling staff member that wallet's and kyc's staff
servicers share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from vaultpay_common.context import PRINCIPAL, Principal, Role
from vaultpay_common.errors import InsufficientPermissionsError, UnauthenticatedError
from vaultpay_common.grpc.convert import current_staff


@contextmanager
def _calling(principal: Principal | None) -> Iterator[None]:
    token = PRINCIPAL.set(principal)
    try:
        yield
    finally:
        PRINCIPAL.reset(token)


def test_a_staff_token_gives_the_staff_members_id_and_role() -> None:
    with _calling(Principal("adm-1", Role.ADMIN)):
        assert current_staff() == ("adm-1", Role.ADMIN)


def test_a_token_without_a_role_is_refused_as_insufficient_permissions() -> None:
    service = Principal("service:transfer", None, service="transfer")
    with _calling(service), pytest.raises(InsufficientPermissionsError):
        current_staff()


def test_no_caller_is_unauthenticated() -> None:
    with _calling(None), pytest.raises(UnauthenticatedError):
        current_staff()
