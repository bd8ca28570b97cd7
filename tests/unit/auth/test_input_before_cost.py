"""Review of 2026-12-05 (input validation), auth's share: what the request alone shows bad is
refused before it costs anything that is counted or kept.

ChangePassword reserved an attempt on the user's change counter, ran bcrypt on the current
password, wrote `password_change_failed` for a wrong one and counted toward lockout, and only
then looked at the new password's length and letters, a check of the request alone.
ListAuthAuditEvents copied its filters unchecked into the permanent `audit_events.listed` row."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.auth.fakes import PASSWORD
from tests.unit.auth.test_sign_up_and_security_events import IP, WRONG, World
from vaultpay.auth.v1 import auth_pb2
from vaultpay_auth.domain.errors import LoginThrottledError
from vaultpay_auth.entrypoints.servicers import AuthAdminServicer
from vaultpay_common.context import METHOD, PRINCIPAL, Principal, Role
from vaultpay_common.errors import ValidationError
from vaultpay_common.pagination import PageTokens

EMAIL = "adalove@example.com"


def _nothing_counted_or_kept(world: World) -> None:
    assert world.throttle.reserved == []  # no attempt counted toward the lockout
    assert world.hasher.calls == []  # no bcrypt
    assert world.uow.entries("user.password_change_failed") == []  # no audit row


@pytest.mark.parametrize(
    ("new", "problem"),
    [
        ("short 1", "must be 12 to 128 characters"),
        ("x1" * 65, "must be 12 to 128 characters"),
        ("no digits in this one", "must contain at least one letter and one digit"),
        (
            "Adalove garden 77",
            "must not contain the email address or its name part (before the @)",
        ),
        (PASSWORD, "must differ from the current password"),
    ],
)
@pytest.mark.parametrize("current", [PASSWORD, WRONG])
async def test_a_bad_new_password_is_refused_before_the_current_one_is_tried(
    current: str, new: str, problem: str
) -> None:
    world = World()
    user = world.add_user(EMAIL)
    if new == PASSWORD:
        new = current  # the same as typed: "must differ" whatever the current password is
    with pytest.raises(ValidationError) as refused:
        await world.accounts.change_password(user.id, "s1", current, new, IP)
    assert [(v.field, v.description) for v in refused.value.violations] == [
        ("new_password", problem)
    ]
    _nothing_counted_or_kept(world)


async def test_a_missing_current_password_is_named_with_a_bad_new_one() -> None:
    world = World()
    user = world.add_user(EMAIL)
    with pytest.raises(ValidationError) as refused:
        await world.accounts.change_password(user.id, "s1", "", "short 1", IP)
    assert [v.field for v in refused.value.violations] == ["current_password", "new_password"]
    _nothing_counted_or_kept(world)


async def test_a_guessable_new_password_is_judged_after_the_throttle() -> None:
    """zxcvbn costs up to tens of milliseconds of a thread: a stolen access token must not run
    it unthrottled, so a password of the right shape that is easy to guess is still judged
    after the throttle and the current password."""
    world = World()
    user = world.add_user(EMAIL)
    world.throttle.refusal = LoginThrottledError(
        retry_after_seconds=60, scopes=("account",), first_refusal=False
    )
    with pytest.raises(LoginThrottledError):
        await world.accounts.change_password(user.id, "s1", PASSWORD, "password1234", IP)
    world.throttle.refusal = None
    with pytest.raises(ValidationError) as refused:
        await world.accounts.change_password(user.id, "s1", PASSWORD, "password1234", IP)
    assert [v.field for v in refused.value.violations] == ["new_password"]
    assert "too easy to guess" in refused.value.violations[0].description
    assert len(world.throttle.reserved) == 1


# --- ListAuthAuditEvents ---------------------------------------------------------------------


@pytest.fixture
def admin_calling() -> Iterator[None]:
    principal = PRINCIPAL.set(
        Principal(subject="0b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6e", role=Role.ADMIN)
    )
    method = METHOD.set("/vaultpay.auth.v1.AuthAdminService/ListAuthAuditEvents")
    yield
    PRINCIPAL.reset(principal)
    METHOD.reset(method)


@pytest.mark.usefixtures("admin_calling")
async def test_a_filter_of_no_real_shape_leaves_no_audit_row() -> None:
    """A 1,000,000-character actor_id with U+202E and U+2028 answered 200 and left a ~1 MB
    `audit_events.listed` row that nothing deletes; every call another."""
    world = World()
    servicer = AuthAdminServicer(world.admin, PageTokens(b"k" * 32))
    request = auth_pb2.ListAuthAuditEventsRequest(actor_id="\u202e" + "a" * 1_000_000 + "\u2028")
    with pytest.raises(ValidationError) as refused:
        await servicer.ListAuthAuditEvents(request, None)  # type: ignore[arg-type]
    assert [v.field for v in refused.value.violations] == ["actor_id"]
    assert world.uow.entries("audit_events.listed") == []
    good = auth_pb2.ListAuthAuditEventsRequest(actor_id="service:wallet", action="user.login")
    await servicer.ListAuthAuditEvents(good, None)  # type: ignore[arg-type]
    assert dict(world.only("audit_events.listed").details) == {
        "actor_id": "service:wallet",
        "action": "user.login",
        "count": "0",
        "sequences": "",
        "ip": "",
    }
