"""Security events reach the audit trail (ASVS 5.0 V16): failed and throttled sign-ins, logout,
password changes, refresh-token reuse, staff changes and staff reads of users' data and of the
audit log, each with the client IP and never a password or a clear email address."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from tests.integration.auth.conftest import PASSWORD, SERVICE_SECRET, AuthStack, bearer
from tests.integration.auth.stacks import as_gateway, own_auth_stack
from tests.support import rpc_failure
from vaultpay.auth.v1 import auth_pb2
from vaultpay.type.v1 import audit_pb2, role_pb2
from vaultpay_devstack.infra import Infra

WRONG = "wrong password 99 x"


@pytest.fixture(scope="module")
async def auth(infra: Infra) -> AsyncIterator[AuthStack]:
    async with own_auth_stack(infra, "authev") as started:
        yield started


@pytest.fixture(scope="module")
async def admin(auth: AuthStack) -> auth_pb2.TokenPair:
    return (await auth.staff("ADMIN"))[1]


def caller(auth: AuthStack, address: str, request_id: str = "") -> tuple[tuple[str, str], ...]:
    """A call the gateway forwards for a client at `address`, with an optional request id."""
    return as_gateway(auth, address) + ((("x-request-id", request_id),) if request_id else ())


def fresh_ip() -> str:
    return f"203.0.113.{secrets.randbelow(254) + 1}"


def fresh_email(label: str = "user") -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}@example.com"


async def events(
    auth: AuthStack, admin: auth_pb2.TokenPair, action: str, target_id: str = ""
) -> list[audit_pb2.AuditEvent]:
    reply = await auth.admin.ListAuthAuditEvents(
        auth_pb2.ListAuthAuditEventsRequest(action=action, target_id=target_id, page_size=100),
        metadata=bearer(admin),
    )
    return list(reply.events)


def assert_no_secrets(event: audit_pb2.AuditEvent, *secrets_: str) -> None:
    text = " ".join([event.target_id, *event.details.keys(), *event.details.values()]).lower()
    for secret in secrets_:
        assert secret.lower() not in text, f"{secret!r} leaked into {event}"


async def test_a_failed_login_for_an_unknown_email_is_audited_with_a_keyed_hash(
    auth: AuthStack, admin: auth_pb2.TokenPair
) -> None:
    email, address, request_id = fresh_email("ghost"), fresh_ip(), f"rq-{uuid.uuid4().hex}"
    failure = await rpc_failure(
        auth.public.Login(
            auth_pb2.LoginRequest(email=email, password=WRONG),
            metadata=caller(auth, address, request_id),
        )
    )
    assert failure.reason == "INVALID_CREDENTIALS"
    [event] = [
        e for e in await events(auth, admin, "user.login_failed") if e.request_id == request_id
    ]
    assert (event.actor_id, event.target_type) == ("anonymous", "email")
    assert event.details["ip"] == address
    assert event.details["reason"] == "invalid_credentials"
    assert len(event.details["email_hash"]) == 64 and event.target_id == event.details["email_hash"]
    assert_no_secrets(event, email, email.split("@")[0], WRONG)


async def test_a_failed_login_for_a_known_account_targets_the_user(
    auth: AuthStack, admin: auth_pb2.TokenPair
) -> None:
    user = await auth.register()
    address = fresh_ip()
    await rpc_failure(
        auth.public.Login(
            auth_pb2.LoginRequest(email=user.email, password=WRONG), metadata=caller(auth, address)
        )
    )
    [event] = await events(auth, admin, "user.login_failed", user.user_id)
    assert (event.target_type, event.details["ip"]) == ("user", address)
    assert_no_secrets(event, user.email, WRONG, PASSWORD)


async def test_the_same_email_hashes_alike_so_events_can_be_correlated(
    auth: AuthStack, admin: auth_pb2.TokenPair
) -> None:
    email = fresh_email("twice")
    for _ in range(2):
        await rpc_failure(
            auth.public.Login(
                auth_pb2.LoginRequest(email=email, password=WRONG),
                metadata=caller(auth, fresh_ip()),
            )
        )
    listed = await events(auth, admin, "user.login_failed")
    hashes = {e.target_id for e in listed}
    assert any(sum(e.target_id == h for e in listed) >= 2 for h in hashes)


async def test_a_throttled_account_is_audited_once_per_window(
    auth: AuthStack, admin: auth_pb2.TokenPair
) -> None:
    user = await auth.register()
    for _ in range(5):
        await rpc_failure(
            auth.public.Login(
                auth_pb2.LoginRequest(email=user.email, password=WRONG),
                metadata=caller(auth, fresh_ip()),
            )
        )
    for _ in range(3):
        refused = await rpc_failure(
            auth.public.Login(
                auth_pb2.LoginRequest(email=user.email, password=PASSWORD),
                metadata=caller(auth, fresh_ip()),
            )
        )
        assert refused.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    [event] = await events(auth, admin, "user.login_throttled", user.user_id)
    assert event.details["scope"] == "account"
    assert_no_secrets(event, user.email, PASSWORD)


async def test_logout_is_audited_with_the_session_and_address(
    auth: AuthStack, admin: auth_pb2.TokenPair
) -> None:
    user, tokens = await auth.user_with_token()
    address = fresh_ip()
    await auth.public.Logout(
        auth_pb2.LogoutRequest(), metadata=bearer(tokens) + caller(auth, address)
    )
    [event] = await events(auth, admin, "user.logout", user.user_id)
    assert (event.actor_id, event.details["ip"]) == (user.user_id, address)
    assert event.details["session_id"]
    assert_no_secrets(event, tokens.access_token, tokens.refresh_token, user.email)


async def test_a_failed_password_change_is_audited_without_the_passwords(
    auth: AuthStack, admin: auth_pb2.TokenPair
) -> None:
    user, tokens = await auth.user_with_token()
    request = auth_pb2.ChangePasswordRequest(
        current_password="not it 123 at all", new_password="a brand new 77 secret"
    )
    address = fresh_ip()
    failure = await rpc_failure(
        auth.public.ChangePassword(request, metadata=bearer(tokens) + caller(auth, address))
    )
    assert failure.fields == ["current_password"]
    [event] = await events(auth, admin, "user.password_change_failed", user.user_id)
    assert (event.actor_id, event.details["reason"]) == (user.user_id, "wrong_current_password")
    assert event.details["ip"] == address
    assert_no_secrets(event, "not it 123 at all", "a brand new 77 secret", user.email)


async def test_a_staff_member_reading_a_user_is_audited(
    auth: AuthStack, admin: auth_pb2.TokenPair
) -> None:
    moderator, moderator_tokens = await auth.staff("MODERATOR")
    user = await auth.register()
    address = fresh_ip()
    await auth.admin.GetUser(
        auth_pb2.GetUserRequest(user_id=user.user_id),
        metadata=bearer(moderator_tokens) + caller(auth, address),
    )
    [event] = await events(auth, admin, "user.viewed", user.user_id)
    assert (event.actor_id, event.actor_role) == (moderator.user_id, "MODERATOR")
    assert event.details["ip"] == address
    assert_no_secrets(event, user.email)


async def test_a_staff_listing_of_users_is_audited_with_the_ids_shown(
    auth: AuthStack, admin: auth_pb2.TokenPair
) -> None:
    moderator, moderator_tokens = await auth.staff("MODERATOR")
    user = await auth.register()
    reply = await auth.admin.ListUsers(
        auth_pb2.ListUsersRequest(email_prefix=user.email, page_size=5),
        metadata=bearer(moderator_tokens),
    )
    assert [u.user_id for u in reply.users] == [user.user_id]
    listed = [
        e for e in await events(auth, admin, "users.listed") if e.actor_id == moderator.user_id
    ]
    [event] = listed
    assert event.details["user_ids"] == user.user_id
    assert event.details["count"] == "1"
    assert_no_secrets(event, user.email)


async def test_a_peer_service_reading_a_contact_or_a_role_is_not_a_staff_read(
    auth: AuthStack, admin: auth_pb2.TokenPair
) -> None:
    user = await auth.register()
    service = await auth.internal.IssueServiceToken(
        auth_pb2.IssueServiceTokenRequest(
            client_id="wallet", client_secret=SERVICE_SECRET, audience="auth"
        )
    )
    await auth.internal.GetUserContact(
        auth_pb2.GetUserContactRequest(user_id=user.user_id),
        metadata=bearer(service.access_token),
    )
    await auth.internal.GetUserRole(
        auth_pb2.GetUserRoleRequest(user_id=user.user_id),
        metadata=bearer(service.access_token),
    )
    assert await events(auth, admin, "user.viewed", user.user_id) == []


# --- Security review of 2026-12-04 (night) ---------------------------------------------------


async def test_staff_changes_of_a_user_are_audited_with_the_address(
    auth: AuthStack, admin: auth_pb2.TokenPair
) -> None:
    _, root = await auth.staff("SUPER_ADMIN")
    user = await auth.register()
    address = fresh_ip()
    at = bearer(root) + caller(auth, address)
    await auth.admin.SetUserRole(
        auth_pb2.SetUserRoleRequest(
            user_id=user.user_id, role=role_pb2.ROLE_MODERATOR, reason="promo"
        ),
        metadata=at,
    )
    await auth.admin.DeactivateUser(
        auth_pb2.DeactivateUserRequest(user_id=user.user_id, reason="left"), metadata=at
    )
    await auth.admin.ReactivateUser(
        auth_pb2.ReactivateUserRequest(user_id=user.user_id, reason="back"), metadata=at
    )
    for action in ("user.role_changed", "user.deactivated", "user.reactivated"):
        [event] = await events(auth, admin, action, user.user_id)
        assert event.details["ip"] == address, action


async def test_a_changed_password_is_audited_with_the_address(
    auth: AuthStack, admin: auth_pb2.TokenPair
) -> None:
    user, tokens = await auth.user_with_token()
    address = fresh_ip()
    await auth.public.ChangePassword(
        auth_pb2.ChangePasswordRequest(
            current_password=PASSWORD, new_password="a brand new 77 secret"
        ),
        metadata=bearer(tokens) + caller(auth, address),
    )
    [event] = await events(auth, admin, "user.password_changed", user.user_id)
    assert (event.actor_id, event.details["ip"]) == (user.user_id, address)


async def test_a_reused_refresh_token_is_found_by_its_user_with_the_address(
    auth: AuthStack, admin: auth_pb2.TokenPair
) -> None:
    user, first = await auth.user_with_token()
    await auth.public.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=first.refresh_token),
        metadata=caller(auth, fresh_ip()),
    )
    thief = fresh_ip()
    reuse = await rpc_failure(
        auth.public.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=first.refresh_token),
            metadata=caller(auth, thief),
        )
    )
    assert reuse.reason == "TOKEN_REVOKED"
    [event] = await events(auth, admin, "session.refresh_reuse_detected", user.user_id)
    assert (event.actor_id, event.target_type) == ("anonymous", "user")
    assert event.details["ip"] == thief and event.details["session_id"]
    assert_no_secrets(event, first.refresh_token, first.access_token)


async def test_a_read_of_the_audit_log_is_audited_with_its_filters_count_and_address(
    auth: AuthStack,
) -> None:
    reader, reader_tokens = await auth.staff("ADMIN")
    user, _ = await auth.user_with_token()
    address = fresh_ip()
    shown = await auth.admin.ListAuthAuditEvents(
        auth_pb2.ListAuthAuditEventsRequest(target_id=user.user_id, action="user.login"),
        metadata=bearer(reader_tokens) + caller(auth, address),
    )
    assert len(shown.events) == 1
    listed = await auth.admin.ListAuthAuditEvents(
        auth_pb2.ListAuthAuditEventsRequest(actor_id=reader.user_id, action="audit_events.listed"),
        metadata=bearer(reader_tokens),
    )
    [event] = listed.events  # this read's own row commits after it
    assert (event.actor_id, event.actor_role, event.target_type) == (
        reader.user_id,
        "ADMIN",
        "audit_events",
    )
    assert dict(event.details) == {
        "action": "user.login",
        "target_id": user.user_id,
        "count": "1",
        "sequences": str(shown.events[0].sequence),
        "ip": address,
    }
