"""Service identities, introspection, JWKS, signing-key rotation and withdrawal, and the
ids and page tokens of auth's RPCs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import grpc
import jwt
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.integration.auth.conftest import SERVICE_SECRET, AuthStack, bearer
from tests.integration.auth.stacks import own_auth_stack
from tests.support import rpc_failure
from vaultpay.auth.v1 import auth_pb2
from vaultpay.type.v1 import role_pb2
from vaultpay_auth.adapters.signing import KeyRing
from vaultpay_auth.settings import AuthSettings
from vaultpay_common.audit import AuditEntry
from vaultpay_common.db import create_engine
from vaultpay_common.pagination import PageScope, PageTokens
from vaultpay_devstack.infra import Infra

T = TypeVar("T")

# Every identity of the mesh, so that the access rules of the internal RPCs are tried for each.
_SERVICE_CLIENTS = ",".join(f"{c}:{SERVICE_SECRET}" for c in ("wallet", "kyc", "transfer"))


@pytest.fixture(scope="module")
async def auth(infra: Infra) -> AsyncIterator[AuthStack]:
    """This module's own auth server. It reloads its keys only hourly by itself, so whatever
    it picks up within seconds reached it through the key-change notification."""
    async with own_auth_stack(
        infra, "keys", key_reload_seconds=3600.0, service_clients=_SERVICE_CLIENTS
    ) as started:
        yield started


async def _eventually(check: Callable[[], Awaitable[T | None]], *, within: float, what: str) -> T:
    """Polls `check` until it returns something truthy; fails after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)


def _kid(tokens: auth_pb2.TokenPair | str) -> str:
    token = tokens if isinstance(tokens, str) else tokens.access_token
    return str(jwt.get_unverified_header(token)["kid"])


async def _published(auth: AuthStack) -> set[str]:
    return {key.kid for key in (await auth.public.GetJwks(auth_pb2.GetJwksRequest())).keys}


async def _signed_with_another_key_than(
    auth: AuthStack, email: str, old_kid: str
) -> auth_pb2.TokenPair:
    async def login() -> auth_pb2.TokenPair | None:
        tokens = await auth.login(email)
        return tokens if _kid(tokens) != old_kid else None

    return await _eventually(login, within=5, what=f"auth stops signing with {old_kid}")


@pytest.fixture
async def ring(auth: AuthStack) -> AsyncIterator[KeyRing]:
    """A key ring on the server's database, as another replica (or the CLI) holds it."""
    engine = create_engine(auth.env["AUTH_DATABASE_URL"], pool_size=2, application_name="test")
    keys = KeyRing(
        engine,
        base64.b64decode(auth.env["AUTH_KEY_ENCRYPTION_KEY"]),
        verify_window=timedelta(minutes=20),
    )
    await keys.ensure_active()
    try:
        yield keys
    finally:
        await engine.dispose()


async def _service_token(auth: AuthStack, client_id: str = "wallet", to: str = "auth") -> str:
    reply: auth_pb2.IssueServiceTokenResponse = await auth.internal.IssueServiceToken(
        auth_pb2.IssueServiceTokenRequest(
            client_id=client_id, client_secret=SERVICE_SECRET, audience=to
        )
    )
    return reply.access_token


async def test_a_service_token_works_only_at_the_service_it_was_issued_for(
    auth: AuthStack,
) -> None:
    """Review of 2026-12-05: every service token was addressed to the whole mesh, so transfer,
    given wallet's token with wallet's call, could read any user's contact at auth as wallet.
    A token is now addressed to the service asked for, and auth refuses one for another."""
    user = await auth.register()
    asked = auth_pb2.GetUserContactRequest(user_id=user.user_id)
    own = await _service_token(auth, "wallet", to="auth")
    assert jwt.decode(own, options={"verify_signature": False})["aud"] == "vaultpay:auth"
    assert (await auth.internal.GetUserContact(asked, metadata=bearer(own))).email
    for elsewhere in ("transfer", "kyc", "wallet", ""):  # "": an unscoped token, older builds'
        token = await _service_token(auth, "wallet", to=elsewhere)
        failure = await rpc_failure(auth.internal.GetUserContact(asked, metadata=bearer(token)))
        assert (failure.code, failure.reason) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "TOKEN_INVALID",
        ), elsewhere
    bad = await rpc_failure(
        auth.internal.IssueServiceToken(
            auth_pb2.IssueServiceTokenRequest(
                client_id="wallet", client_secret=SERVICE_SECRET, audience="gateway"
            )
        )
    )
    assert (bad.code, bad.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["audience"])


async def test_service_identity_introspects_a_live_user_token(auth: AuthStack) -> None:
    user, tokens = await auth.user_with_token()
    answer = await auth.internal.IntrospectToken(
        auth_pb2.IntrospectTokenRequest(token=tokens.access_token),
        metadata=bearer(await _service_token(auth)),
    )
    assert answer.active
    assert answer.user_id == user.user_id
    assert answer.role == user.role


async def test_introspection_reports_a_revoked_token(auth: AuthStack) -> None:
    _, tokens = await auth.user_with_token()
    await auth.public.Logout(auth_pb2.LogoutRequest(), metadata=bearer(tokens))
    answer = await auth.internal.IntrospectToken(
        auth_pb2.IntrospectTokenRequest(token=tokens.access_token),
        metadata=bearer(await _service_token(auth)),
    )
    assert not answer.active
    assert answer.inactive_reason == auth_pb2.INACTIVE_REASON_TOKEN_REVOKED


async def test_an_access_token_never_outlives_its_session(infra: Infra) -> None:
    """A session that merely expires is in no revocation feed, so the services would honour
    a token of it until the token's own expiry: its tokens are cut at the session's end."""
    async with own_auth_stack(infra, "shortsession", refresh_token_ttl_seconds=120) as stack:
        _, tokens = await stack.user_with_token()
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    assert 0 < claims["exp"] - claims["iat"] <= 120  # not the usual 15 minutes
    assert claims["exp"] <= tokens.refresh_token_expire_time.seconds  # the session's end
    assert tokens.access_token_expire_time.seconds == claims["exp"]


async def test_users_cannot_call_internal_rpcs(auth: AuthStack) -> None:
    _, tokens = await auth.user_with_token()
    failure = await rpc_failure(
        auth.internal.IntrospectToken(
            auth_pb2.IntrospectTokenRequest(token=tokens.access_token), metadata=bearer(tokens)
        )
    )
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_PERMISSIONS",
    )


async def test_service_tokens_cannot_call_user_rpcs(auth: AuthStack) -> None:
    failure = await rpc_failure(
        auth.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(await _service_token(auth)))
    )
    assert failure.code is grpc.StatusCode.PERMISSION_DENIED


async def test_wrong_client_secret_is_refused(auth: AuthStack) -> None:
    failure = await rpc_failure(
        auth.internal.IssueServiceToken(
            auth_pb2.IssueServiceTokenRequest(client_id="wallet", client_secret="guess")
        )
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CLIENT")


async def test_jwks_publishes_the_key_that_signs_tokens(auth: AuthStack) -> None:
    _, tokens = await auth.user_with_token()
    jwks = await auth.public.GetJwks(auth_pb2.GetJwksRequest())
    kid = jwt.get_unverified_header(tokens.access_token)["kid"]
    assert kid in {key.kid for key in jwks.keys}
    assert all(key.kty == "OKP" and key.alg == "EdDSA" for key in jwks.keys)
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    assert {"sub", "role", "jti", "iat", "exp", "iss", "aud", "typ", "sid"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 15 * 60


async def test_services_look_up_a_users_contact_and_current_role(auth: AuthStack) -> None:
    user = await auth.register()
    reply = await auth.internal.GetUserContact(
        auth_pb2.GetUserContactRequest(user_id=user.user_id),
        metadata=bearer(await _service_token(auth)),
    )
    assert (reply.email, reply.active, reply.role) == (user.email, True, role_pb2.ROLE_USER)
    staff, _ = await auth.staff("MODERATOR")
    reply = await auth.internal.GetUserContact(
        auth_pb2.GetUserContactRequest(user_id=staff.user_id),
        metadata=bearer(await _service_token(auth)),
    )
    assert reply.role == role_pb2.ROLE_MODERATOR


async def test_kyc_may_ask_a_users_role_but_never_their_contact(auth: AuthStack) -> None:
    """Kyc's reviews need the owner's rank, not where to reach them: its service identity is
    refused GetUserContact (the user's email and name) and answered GetUserRole."""
    user = await auth.register()
    kyc = await _service_token(auth, "kyc")
    failure = await rpc_failure(
        auth.internal.GetUserContact(
            auth_pb2.GetUserContactRequest(user_id=user.user_id), metadata=bearer(kyc)
        )
    )
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_PERMISSIONS",
    )
    reply = await auth.internal.GetUserRole(
        auth_pb2.GetUserRoleRequest(user_id=user.user_id), metadata=bearer(kyc)
    )
    assert reply.role == role_pb2.ROLE_USER


async def test_only_wallet_of_the_services_may_ask_a_contact(auth: AuthStack) -> None:
    user = await auth.register()
    for service in ("kyc", "transfer"):
        failure = await rpc_failure(
            auth.internal.GetUserContact(
                auth_pb2.GetUserContactRequest(user_id=user.user_id),
                metadata=bearer(await _service_token(auth, service)),
            )
        )
        assert failure.code is grpc.StatusCode.PERMISSION_DENIED, service
    reply = await auth.internal.GetUserContact(
        auth_pb2.GetUserContactRequest(user_id=user.user_id),
        metadata=bearer(await _service_token(auth, "wallet")),
    )
    assert reply.email == user.email


async def _role_of(auth: AuthStack, user_id: str, service: str) -> role_pb2.Role.ValueType:
    reply: auth_pb2.GetUserRoleResponse = await auth.internal.GetUserRole(
        auth_pb2.GetUserRoleRequest(user_id=user_id),
        metadata=bearer(await _service_token(auth, service)),
    )
    return reply.role


@pytest.mark.parametrize("service", ["wallet", "kyc"])
async def test_the_rank_services_look_up_a_users_current_role_and_nothing_else(
    auth: AuthStack, service: str
) -> None:
    """Wallet's staff actions and kyc's reviews compare the owner's role with the caller's:
    the answer carries the role and whether the user is active (kyc's approval refuses a
    deactivated owner), never the user's email or name."""
    assert [f.name for f in auth_pb2.GetUserRoleResponse.DESCRIPTOR.fields] == ["role", "active"]
    user = await auth.register()
    assert await _role_of(auth, user.user_id, service) == role_pb2.ROLE_USER
    staff, _ = await auth.staff("MODERATOR")
    assert await _role_of(auth, staff.user_id, service) == role_pb2.ROLE_MODERATOR


async def test_a_deactivated_users_role_is_still_their_role_and_they_are_said_inactive(
    auth: AuthStack,
) -> None:
    """As GetUserContact answered it: a deactivated admin's staff freezes stay protected by
    their rank (the rank rule does not look at whether the owner or setter is active). The
    state is answered beside it, always set, for kyc's approval of a deactivated owner."""
    _, super_admin = await auth.staff("SUPER_ADMIN")
    admin, _ = await auth.staff("ADMIN")

    async def answer() -> auth_pb2.GetUserRoleResponse:
        reply: auth_pb2.GetUserRoleResponse = await auth.internal.GetUserRole(
            auth_pb2.GetUserRoleRequest(user_id=admin.user_id),
            metadata=bearer(await _service_token(auth, "kyc")),
        )
        return reply

    before = await answer()
    assert (before.role, before.HasField("active"), before.active) == (
        role_pb2.ROLE_ADMIN,
        True,
        True,
    )
    await auth.admin.DeactivateUser(
        auth_pb2.DeactivateUserRequest(user_id=admin.user_id, reason="left the company"),
        metadata=bearer(super_admin),
    )
    after = await answer()
    assert (after.role, after.HasField("active"), after.active) == (
        role_pb2.ROLE_ADMIN,
        True,
        False,
    )


async def test_the_role_of_a_user_auth_does_not_know_is_not_found(auth: AuthStack) -> None:
    failure = await rpc_failure(
        auth.internal.GetUserRole(
            auth_pb2.GetUserRoleRequest(user_id=str(uuid.uuid4())),
            metadata=bearer(await _service_token(auth, "kyc")),
        )
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")


async def test_users_and_services_without_a_rank_rule_cannot_ask_a_role(auth: AuthStack) -> None:
    user, tokens = await auth.user_with_token()
    _, admin = await auth.staff("ADMIN")
    for token in (tokens.access_token, admin.access_token, await _service_token(auth, "transfer")):
        failure = await rpc_failure(
            auth.internal.GetUserRole(
                auth_pb2.GetUserRoleRequest(user_id=user.user_id), metadata=bearer(token)
            )
        )
        assert (failure.code, failure.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "INSUFFICIENT_PERMISSIONS",
        )


# ----- rotation: a published standby key takes over ---------------------------------------


async def test_the_jwks_publishes_a_standby_key_besides_the_signing_one(
    auth: AuthStack, ring: KeyRing
) -> None:
    _, tokens = await auth.user_with_token()
    published = await _published(auth)
    assert _kid(tokens) in published
    assert ring.standby is not None
    assert ring.standby.kid in published
    assert ring.standby.kid != ring.active.kid
    far_future = datetime.now(UTC) + timedelta(days=3650)
    assert ring.signer_at(far_future).kid == ring.active.kid  # a standby never signs by itself


async def test_rotation_promotes_the_standby_once_it_has_been_published_for_the_lead(
    ring: KeyRing,
) -> None:
    await ring.reload()
    signer, standby = ring.active, ring.standby
    assert standby is not None
    lead = timedelta(hours=1)
    kid, switch_at = await ring.rotate(lead)
    assert (kid, switch_at) == (standby.kid, standby.published_at + lead)
    assert ring.signer_at(datetime.now(UTC)).kid == signer.kid
    assert ring.signer_at(switch_at).kid == kid
    assert ring.standby is not None and ring.standby.kid not in {signer.kid, kid}
    # Rotating again takes the key that has been published longest, now if it may.
    again, at_once = await ring.rotate(timedelta(0))
    assert again == kid
    assert at_once <= datetime.now(UTC)
    assert ring.active.kid == kid
    assert {signer.kid, kid} <= {key["kid"] for key in ring.jwks()}


async def test_cli_rotation_switches_to_a_key_verifiers_already_hold_and_old_tokens_stay_valid(
    auth: AuthStack,
) -> None:
    user, old = await auth.user_with_token()
    published_before = await _published(auth)
    result = auth.cli("rotate-signing-key", "--immediate")
    assert result.returncode == 0, result.stderr
    new = await _signed_with_another_key_than(auth, user.email, _kid(old))
    assert _kid(new) in published_before
    for tokens in (old, new):
        await auth.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(tokens))


# ----- emergency withdrawal -----------------------------------------------------------------


async def test_withdrawing_the_signing_key_switches_to_the_published_standby(
    auth: AuthStack,
) -> None:
    user, old = await auth.user_with_token()
    published_before = await _published(auth)
    result = auth.cli("withdraw-signing-key", "--kid", _kid(old))
    assert result.returncode == 0, result.stderr
    new = await _signed_with_another_key_than(auth, user.email, _kid(old))
    # Every verifier that fetched the JWKS before the withdrawal already holds the new key.
    assert _kid(new) in published_before
    published_after = await _published(auth)
    assert _kid(old) not in published_after
    assert published_after - published_before, "a fresh standby for the next emergency"
    refused = await rpc_failure(auth.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(old)))
    assert refused.reason == "TOKEN_INVALID"
    await auth.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(new))


async def test_a_withdrawal_reaches_a_running_replica_at_once_through_notify(
    auth: AuthStack, ring: KeyRing
) -> None:
    changes: list[float] = []

    async def changed() -> None:
        changes.append(time.monotonic())

    ring.on_change(changed)
    # An interval no test waits for: only the notification can explain a prompt reload.
    watch = asyncio.create_task(ring.watch(interval=3600))
    try:

        async def listening() -> bool:
            return ring.watching

        await _eventually(listening, within=5, what="the replica listens")
        withdrawn = ring.active.kid
        result = auth.cli("withdraw-signing-key", "--kid", withdrawn)
        assert result.returncode == 0, result.stderr

        async def switched() -> bool:
            return ring.active.kid != withdrawn

        await _eventually(switched, within=3, what="the replica stops signing with it")
        assert withdrawn not in {key["kid"] for key in ring.jwks()}
        assert changes
    finally:
        watch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watch


async def test_a_watch_that_loses_its_connection_ends_so_that_its_job_restarts_it(
    auth: AuthStack, ring: KeyRing
) -> None:
    watch = asyncio.create_task(ring.watch(interval=3600))
    engine = create_engine(auth.env["AUTH_DATABASE_URL"], pool_size=1, application_name="killer")
    try:

        async def listening() -> bool:
            return ring.watching

        await _eventually(listening, within=5, what="the replica listens")
        async with engine.connect() as conn:
            await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'test' AND query LIKE 'LISTEN %'"
                )
            )

        async def ended() -> bool:
            return watch.done()

        await _eventually(ended, within=10, what="the watch notices the lost connection")
        assert isinstance(watch.exception(), Exception)
        assert not ring.watching
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watch
        await engine.dispose()


async def test_withdrawing_the_standby_publishes_another_and_signing_goes_on(
    auth: AuthStack, ring: KeyRing
) -> None:
    signer, standby = ring.active, ring.standby
    assert standby is not None
    result = auth.cli("withdraw-signing-key", "--kid", standby.kid)
    assert result.returncode == 0, result.stderr
    await ring.reload()
    assert ring.active.kid == signer.kid
    assert ring.standby is not None and ring.standby.kid != standby.kid
    await _eventually(
        lambda: _not_published(auth, standby.kid), within=5, what="the standby leaves the JWKS"
    )


async def _not_published(auth: AuthStack, kid: str) -> bool:
    return kid not in await _published(auth)


async def test_withdrawing_the_key_a_rotation_would_switch_to_keeps_the_current_one_signing(
    ring: KeyRing,
) -> None:
    signer = ring.active
    kid, switch_at = await ring.rotate(timedelta(hours=1))
    await ring.withdraw(kid)
    assert ring.signer_at(switch_at + timedelta(seconds=1)).kid == signer.kid
    assert ring.standby is not None and ring.standby.kid != kid


async def test_a_withdrawal_is_audited_in_its_own_transaction(
    auth: AuthStack, ring: KeyRing
) -> None:
    """The CLI's row names what took over; and an audit row that cannot be written takes the
    withdrawal with it (it used to be written after the change had committed)."""
    standby = ring.standby
    assert standby is not None

    async def failing(conn: AsyncConnection, entry: AuditEntry) -> None:
        raise RuntimeError("the audit table refused the row")

    with pytest.raises(RuntimeError, match="refused the row"):
        await ring.withdraw(standby.kid, audit=failing, via="test")
    await ring.reload()
    assert ring.standby is not None and ring.standby.kid == standby.kid, "nothing changed"
    assert standby.kid in await _published(auth)

    signer = ring.active.kid
    result = auth.cli("withdraw-signing-key", "--kid", standby.kid)
    assert result.returncode == 0, result.stderr
    engine = create_engine(auth.env["AUTH_DATABASE_URL"], pool_size=1, application_name="test")
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT e.details, e.xact_id::text::bigint % 4294967296 AS xid,"
                        " k.xmin::text::bigint AS key_xid, k.withdrawn_at IS NOT NULL AS marked"
                        " FROM audit_events e JOIN signing_keys k ON k.kid = e.target_id"
                        " WHERE e.action = 'signing_key.withdrawn' AND e.target_id = :kid"
                    ),
                    {"kid": standby.kid},
                )
            ).all()
    finally:
        await engine.dispose()
    (row,) = rows
    assert row.details["via"] == "cli"
    assert row.details["signer"] == signer
    assert row.details["switched"] == "false"
    assert row.details["standby"] not in ("", standby.kid)
    assert row.marked
    assert row.xid == row.key_xid, "the row and the withdrawal are one transaction"


async def test_withdrawing_an_unknown_key_is_a_clear_error(auth: AuthStack) -> None:
    result = auth.cli("withdraw-signing-key", "--kid", "no-such-key")
    assert result.returncode == 2
    assert "no signing key" in result.stderr


# ----- ids and page tokens answer INVALID_ARGUMENT, never INTERNAL -------------------------


@pytest.mark.parametrize("spelling", ["{%s}", "urn:uuid:%s", "%s-0", " %s"])
async def test_odd_spellings_of_a_user_id_are_invalid_argument(
    auth: AuthStack, spelling: str
) -> None:
    _, admin = await auth.staff("ADMIN")
    user = await auth.register()
    odd = spelling % user.user_id
    failure = await rpc_failure(
        auth.admin.GetUser(auth_pb2.GetUserRequest(user_id=odd), metadata=bearer(admin))
    )
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["user_id"])
    failure = await rpc_failure(
        auth.internal.GetUserContact(
            auth_pb2.GetUserContactRequest(user_id=odd),
            metadata=bearer(await _service_token(auth)),
        )
    )
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["user_id"])
    failure = await rpc_failure(
        auth.internal.GetUserRole(
            auth_pb2.GetUserRoleRequest(user_id=odd),
            metadata=bearer(await _service_token(auth)),
        )
    )
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["user_id"])


async def test_an_upper_case_user_id_finds_the_user(auth: AuthStack) -> None:
    _, admin = await auth.staff("ADMIN")
    user = await auth.register()
    reply = await auth.admin.GetUser(
        auth_pb2.GetUserRequest(user_id=user.user_id.upper()), metadata=bearer(admin)
    )
    assert reply.user.user_id == user.user_id


@pytest.mark.parametrize(
    "position",
    [
        {"c": "0001-01-01T00:00:00+14:00", "i": str(uuid.uuid4())},
        {"c": "9999-12-31T23:59:59-14:00", "i": str(uuid.uuid4())},
        {"c": "2026-01-01T00:00:00+00:00", "i": "urn:uuid:" + str(uuid.uuid4())},
        {"c": 1767225600, "i": str(uuid.uuid4())},
    ],
    ids=repr,
)
async def test_a_validly_signed_page_token_with_unusable_values_is_invalid_argument(
    auth: AuthStack, position: dict[str, object]
) -> None:
    settings = AuthSettings(
        database_url=auth.env["AUTH_DATABASE_URL"],
        redis_url=auth.env["AUTH_REDIS_URL"],
        key_encryption_key=auth.env["AUTH_KEY_ENCRYPTION_KEY"],
    )
    tokens = PageTokens(settings.derived_key("page-token"))
    staff, admin = await auth.staff("ADMIN")
    page_token = tokens.encode(
        position,  # type: ignore[arg-type]
        {"role": None, "active": None, "email_prefix": ""},
        # issued to this admin on ListUsers, so what is refused is the position
        scope=PageScope("/vaultpay.auth.v1.AuthAdminService/ListUsers", staff.user_id),
    )
    failure = await rpc_failure(
        auth.admin.ListUsers(
            auth_pb2.ListUsersRequest(page_token=page_token), metadata=bearer(admin)
        )
    )
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["page_token"])
