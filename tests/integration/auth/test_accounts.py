"""Register, login, refresh, logout, me, change password: through gRPC on a real database."""

from __future__ import annotations

import asyncio
import uuid

import grpc

from tests.integration.auth.conftest import PASSWORD, AuthStack, bearer
from tests.integration.auth.stacks import as_gateway
from tests.support import rpc_failure
from vaultpay.auth.v1 import auth_pb2
from vaultpay_devstack.postgres import run_sql


def _count_users(auth: AuthStack) -> int:
    dsn = auth.dbs.url(auth.dbs.auth_owner_role, auth.dbs.auth_database, driver="postgresql")
    return int(run_sql(dsn, lambda conn: conn.fetchval("SELECT count(*) FROM users")))


async def test_register_login_and_get_me(auth: AuthStack) -> None:
    email = f"Alice-{uuid.uuid4().hex[:8]}@Example.COM"
    user = await auth.register(email)
    assert user.email == email.lower()
    assert user.role == 1  # ROLE_USER
    tokens = await auth.login(email.upper())
    assert tokens.token_type == "Bearer"
    me = await auth.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(tokens))
    assert me.user.user_id == user.user_id


async def test_registering_a_taken_email_is_already_exists(auth: AuthStack) -> None:
    user = await auth.register()
    failure = await rpc_failure(auth.register(user.email.upper()))
    assert failure.code is grpc.StatusCode.ALREADY_EXISTS
    assert failure.reason == "EMAIL_ALREADY_REGISTERED"


async def test_invalid_registration_lists_fields_and_writes_nothing(auth: AuthStack) -> None:
    before = _count_users(auth)
    failure = await rpc_failure(
        auth.public.Register(
            auth_pb2.RegisterRequest(email="nope", password="weak", full_name="x" * 300)
        )
    )
    assert failure.code is grpc.StatusCode.INVALID_ARGUMENT
    assert set(failure.fields) == {"email", "password", "full_name"}
    assert _count_users(auth) == before


async def test_oversized_email_is_invalid_argument(auth: AuthStack) -> None:
    failure = await rpc_failure(auth.register("a" * 250 + "@example.com"))
    assert failure.code is grpc.StatusCode.INVALID_ARGUMENT
    assert failure.fields == ["email"]


async def test_wrong_password_is_unauthenticated_without_saying_which_part(auth: AuthStack) -> None:
    user = await auth.register()
    wrong = await rpc_failure(auth.login(user.email, "wrong password 99 x"))
    unknown = await rpc_failure(auth.login("nobody-" + user.email, PASSWORD))
    assert wrong.code is unknown.code is grpc.StatusCode.UNAUTHENTICATED
    assert wrong.reason == unknown.reason == "INVALID_CREDENTIALS"


async def test_refresh_rotates_and_reuse_revokes_the_whole_family(auth: AuthStack) -> None:
    _, first = await auth.user_with_token()
    second = (
        await auth.public.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=first.refresh_token)
        )
    ).tokens
    assert second.refresh_token != first.refresh_token
    reuse = await rpc_failure(
        auth.public.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=first.refresh_token))
    )
    assert reuse.code is grpc.StatusCode.UNAUTHENTICATED
    assert reuse.reason == "TOKEN_REVOKED"
    # The legitimate holder's newer token is revoked too, and so are its access tokens.
    newer = await rpc_failure(
        auth.public.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=second.refresh_token))
    )
    assert newer.reason == "TOKEN_REVOKED"
    strict = await rpc_failure(auth.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(second)))
    assert strict.reason == "TOKEN_REVOKED"


async def test_unknown_refresh_token_is_invalid(auth: AuthStack) -> None:
    failure = await rpc_failure(
        auth.public.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token="vprt_nope"))
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")


async def test_refresh_token_is_not_accepted_as_an_access_token(auth: AuthStack) -> None:
    _, tokens = await auth.user_with_token()
    failure = await rpc_failure(
        auth.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(tokens.refresh_token))
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")


async def test_after_logout_strict_calls_refuse_the_old_access_token(auth: AuthStack) -> None:
    _, tokens = await auth.user_with_token()
    await auth.public.Logout(auth_pb2.LogoutRequest(), metadata=bearer(tokens))
    failure = await rpc_failure(auth.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(tokens)))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    refresh = await rpc_failure(
        auth.public.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=tokens.refresh_token))
    )
    assert refresh.reason == "TOKEN_REVOKED"


async def test_change_password_keeps_this_session_and_revokes_the_others(auth: AuthStack) -> None:
    user, this = await auth.user_with_token()
    other = await auth.login(user.email)
    reply = await auth.public.ChangePassword(
        auth_pb2.ChangePasswordRequest(
            current_password=PASSWORD, new_password="a brand new 77 secret"
        ),
        metadata=bearer(this),
    )
    assert reply.revoked_session_count == 1
    await auth.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(this))
    failure = await rpc_failure(auth.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(other)))
    assert failure.reason == "TOKEN_REVOKED"
    await auth.login(user.email, "a brand new 77 secret")


async def test_change_password_with_wrong_current_password_changes_nothing(auth: AuthStack) -> None:
    user, tokens = await auth.user_with_token()
    failure = await rpc_failure(
        auth.public.ChangePassword(
            auth_pb2.ChangePasswordRequest(
                current_password="not it 123 at all", new_password="a brand new 77 secret"
            ),
            metadata=bearer(tokens),
        )
    )
    assert failure.fields == ["current_password"]
    await auth.login(user.email)


async def test_login_is_throttled_per_account_with_retry_info(auth: AuthStack) -> None:
    user = await auth.register()
    for _ in range(5):
        await rpc_failure(auth.login(user.email, "wrong password 99 x"))
    failure = await rpc_failure(auth.login(user.email))
    assert failure.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert failure.reason == "RATE_LIMITED"
    assert failure.retry_seconds is not None and failure.retry_seconds > 0


async def test_request_id_is_echoed_back(auth: AuthStack) -> None:
    call = auth.public.GetJwks(
        auth_pb2.GetJwksRequest(), metadata=(("x-request-id", "req-abc-123"),)
    )
    await call
    trailers = dict(await call.trailing_metadata())
    assert trailers["x-request-id"] == "req-abc-123"


async def test_sign_in_is_audited_with_the_user_as_actor(auth: AuthStack) -> None:
    _, admin = await auth.staff("ADMIN")
    user, _ = await auth.user_with_token()
    events = await auth.admin.ListAuthAuditEvents(
        auth_pb2.ListAuthAuditEventsRequest(target_id=user.user_id, action="user.login"),
        metadata=bearer(admin),
    )
    assert [(e.actor_id, e.actor_role) for e in events.events] == [(user.user_id, "USER")]


async def test_login_is_throttled_per_client_ip_across_accounts(auth: AuthStack) -> None:
    # The gateway names the client address it saw (and proves it is the gateway).
    from_ip = as_gateway(auth, f"198.51.100.{uuid.uuid4().int % 250}")
    for attempt in range(20):
        request = auth_pb2.LoginRequest(
            email=f"nobody-{attempt}@example.com", password="wrong 1234 pass"
        )
        await rpc_failure(auth.public.Login(request, metadata=from_ip))
    user = await auth.register()
    blocked = await rpc_failure(
        auth.public.Login(
            auth_pb2.LoginRequest(email=user.email, password=PASSWORD), metadata=from_ip
        )
    )
    assert (blocked.code, blocked.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    await auth.login(user.email)  # the same account from another address is fine


async def test_a_concurrent_burst_of_guesses_cannot_outrun_the_throttle(auth: AuthStack) -> None:
    user = await auth.register()

    async def guess(n: int) -> str:
        from_ip = as_gateway(auth, f"203.0.113.{n}")
        request = auth_pb2.LoginRequest(email=user.email, password=f"guess {n} wrong pw")
        return (await rpc_failure(auth.public.Login(request, metadata=from_ip))).reason

    reasons = await asyncio.gather(*(guess(n) for n in range(30)))
    assert reasons.count("INVALID_CREDENTIALS") == 5  # only the limit's worth reached bcrypt
    assert reasons.count("RATE_LIMITED") == 25


async def test_change_password_guesses_are_throttled(auth: AuthStack) -> None:
    _, tokens = await auth.user_with_token()
    for n in range(5):
        await rpc_failure(
            auth.public.ChangePassword(
                auth_pb2.ChangePasswordRequest(
                    current_password=f"guess {n} 1234", new_password="a brand new 77 secret"
                ),
                metadata=bearer(tokens),
            )
        )
    blocked = await rpc_failure(
        auth.public.ChangePassword(
            auth_pb2.ChangePasswordRequest(
                current_password=PASSWORD, new_password="a brand new 77 secret"
            ),
            metadata=bearer(tokens),
        )
    )
    assert blocked.reason == "RATE_LIMITED"


async def test_nul_characters_are_invalid_argument_naming_the_field(auth: AuthStack) -> None:
    failure = await rpc_failure(
        auth.public.Login(auth_pb2.LoginRequest(email="a\x00b@example.com", password="x"))
    )
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["email"])


async def test_forged_page_tokens_are_invalid_argument(auth: AuthStack) -> None:
    import base64
    import json

    _, admin = await auth.staff("ADMIN")
    real = (
        await auth.admin.ListUsers(auth_pb2.ListUsersRequest(page_size=1), metadata=bearer(admin))
    ).next_page_token
    body, signature = real.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(body + "=="))
    forged_positions = []
    for position in ({"c": "not-a-date", "i": "x"}, {"c": "2026-01-01T00:00:00", "i": "x"}, {}):
        forged = dict(decoded, p=position)
        raw = json.dumps(forged, sort_keys=True, separators=(",", ":")).encode()
        forged_positions.append(
            base64.urlsafe_b64encode(raw).decode().rstrip("=") + "." + signature
        )
    unsigned = base64.urlsafe_b64encode(json.dumps(decoded).encode()).decode()
    for token in [*forged_positions, unsigned, real + "x", "{uuid}"]:
        failure = await rpc_failure(
            auth.admin.ListUsers(
                auth_pb2.ListUsersRequest(page_size=1, page_token=token), metadata=bearer(admin)
            )
        )
        assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["page_token"])
