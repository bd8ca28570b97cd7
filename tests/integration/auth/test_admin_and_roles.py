"""Role rules, deactivation, and the admin user RPCs."""

from __future__ import annotations

import asyncio

import grpc

from tests.integration.auth.conftest import AuthStack, bearer
from tests.support import rpc_failure
from vaultpay.auth.v1 import auth_pb2
from vaultpay.type.v1 import role_pb2


async def test_user_token_on_an_admin_rpc_is_permission_denied(auth: AuthStack) -> None:
    _, tokens = await auth.user_with_token()
    failure = await rpc_failure(
        auth.admin.ListUsers(auth_pb2.ListUsersRequest(), metadata=bearer(tokens))
    )
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_PERMISSIONS",
    )


async def test_moderator_cannot_set_roles(auth: AuthStack) -> None:
    _, moderator = await auth.staff("MODERATOR")
    target = await auth.register()
    failure = await rpc_failure(
        auth.admin.SetUserRole(
            auth_pb2.SetUserRoleRequest(
                user_id=target.user_id, role=role_pb2.ROLE_MODERATOR, reason="r"
            ),
            metadata=bearer(moderator),
        )
    )
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_PERMISSIONS",
    )


async def test_admin_promotes_to_moderator_but_cannot_grant_admin(auth: AuthStack) -> None:
    _, admin = await auth.staff("ADMIN")
    target = await auth.register()
    reply = await auth.admin.SetUserRole(
        auth_pb2.SetUserRoleRequest(
            user_id=target.user_id, role=role_pb2.ROLE_MODERATOR, reason="support team"
        ),
        metadata=bearer(admin),
    )
    assert reply.user.role == role_pb2.ROLE_MODERATOR
    failure = await rpc_failure(
        auth.admin.SetUserRole(
            auth_pb2.SetUserRoleRequest(
                user_id=target.user_id, role=role_pb2.ROLE_ADMIN, reason="r"
            ),
            metadata=bearer(admin),
        )
    )
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_PERMISSIONS",
    )


async def test_nobody_changes_their_own_role(auth: AuthStack) -> None:
    me, super_admin = await auth.staff("SUPER_ADMIN")
    failure = await rpc_failure(
        auth.admin.SetUserRole(
            auth_pb2.SetUserRoleRequest(user_id=me.user_id, role=role_pb2.ROLE_USER, reason="r"),
            metadata=bearer(super_admin),
        )
    )
    assert (failure.code, failure.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CANNOT_MODIFY_SELF",
    )


async def test_super_admins_demoting_each_other_at_once_leave_one_super_admin(
    auth: AuthStack,
) -> None:
    first, first_tokens = await auth.staff("SUPER_ADMIN")
    second, second_tokens = await auth.staff("SUPER_ADMIN")

    async def demote(target: auth_pb2.User, tokens: auth_pb2.TokenPair) -> bool:
        try:
            await auth.admin.SetUserRole(
                auth_pb2.SetUserRoleRequest(
                    user_id=target.user_id, role=role_pb2.ROLE_USER, reason="r"
                ),
                metadata=bearer(tokens),
            )
        except grpc.aio.AioRpcError:
            return False
        return True

    outcomes = await asyncio.gather(demote(second, first_tokens), demote(first, second_tokens))
    assert sorted(outcomes) == [False, True]


async def test_deactivation_cuts_every_session_at_once(auth: AuthStack) -> None:
    _, admin = await auth.staff("ADMIN")
    user, tokens = await auth.user_with_token()
    reply = await auth.admin.DeactivateUser(
        auth_pb2.DeactivateUserRequest(user_id=user.user_id, reason="fraud review"),
        metadata=bearer(admin),
    )
    assert not reply.user.active
    strict = await rpc_failure(auth.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(tokens)))
    assert (strict.code, strict.reason) == (grpc.StatusCode.UNAUTHENTICATED, "ACCOUNT_DISABLED")
    login = await rpc_failure(auth.login(user.email))
    assert login.reason == "ACCOUNT_DISABLED"
    refresh = await rpc_failure(
        auth.public.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=tokens.refresh_token))
    )
    # Review of 2026-12-05: the session's revocation was checked first, and the holder was
    # told TOKEN_REVOKED ("sign in again") instead of the account being disabled.
    assert (refresh.code, refresh.reason) == (grpc.StatusCode.UNAUTHENTICATED, "ACCOUNT_DISABLED")
    await auth.admin.ReactivateUser(
        auth_pb2.ReactivateUserRequest(user_id=user.user_id, reason="cleared"),
        metadata=bearer(admin),
    )
    await auth.login(user.email)


async def test_deactivation_requires_a_reason(auth: AuthStack) -> None:
    _, admin = await auth.staff("ADMIN")
    user = await auth.register()
    failure = await rpc_failure(
        auth.admin.DeactivateUser(
            auth_pb2.DeactivateUserRequest(user_id=user.user_id), metadata=bearer(admin)
        )
    )
    assert failure.fields == ["reason"]


async def test_admin_cannot_deactivate_a_super_admin(auth: AuthStack) -> None:
    _, admin = await auth.staff("ADMIN")
    target, _ = await auth.staff("SUPER_ADMIN")
    failure = await rpc_failure(
        auth.admin.DeactivateUser(
            auth_pb2.DeactivateUserRequest(user_id=target.user_id, reason="x"),
            metadata=bearer(admin),
        )
    )
    assert failure.reason == "INSUFFICIENT_PERMISSIONS"


async def test_an_admin_cannot_reactivate_whom_a_super_admin_deactivated(auth: AuthStack) -> None:
    """Review of 2026-12-05: any admin lifted a super_admin's deactivation of a moderator (staff
    powers and all), and the reactivation needed no reason."""
    _, root = await auth.staff("SUPER_ADMIN")
    _, admin = await auth.staff("ADMIN")
    moderator, _ = await auth.staff("MODERATOR")
    await auth.admin.DeactivateUser(
        auth_pb2.DeactivateUserRequest(user_id=moderator.user_id, reason="fraud #123"),
        metadata=bearer(root),
    )
    unexplained = await rpc_failure(
        auth.admin.ReactivateUser(
            auth_pb2.ReactivateUserRequest(user_id=moderator.user_id), metadata=bearer(root)
        )
    )
    assert (unexplained.code, unexplained.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["reason"])
    outranked = await rpc_failure(
        auth.admin.ReactivateUser(
            auth_pb2.ReactivateUserRequest(user_id=moderator.user_id, reason="looks fine"),
            metadata=bearer(admin),
        )
    )
    assert (outranked.code, outranked.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "DEACTIVATED_BY_HIGHER_RANK",
    )
    still = await auth.admin.GetUser(
        auth_pb2.GetUserRequest(user_id=moderator.user_id), metadata=bearer(root)
    )
    assert not still.user.active
    back = await auth.admin.ReactivateUser(
        auth_pb2.ReactivateUserRequest(user_id=moderator.user_id, reason="cleared"),
        metadata=bearer(root),
    )
    assert back.user.active


async def test_unknown_user_is_not_found(auth: AuthStack) -> None:
    _, moderator = await auth.staff("MODERATOR")
    failure = await rpc_failure(
        auth.admin.GetUser(
            auth_pb2.GetUserRequest(user_id="00000000-0000-0000-0000-000000000000"),
            metadata=bearer(moderator),
        )
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")


async def test_list_users_pages_through_everyone_once(auth: AuthStack) -> None:
    _, moderator = await auth.staff("MODERATOR")
    for _ in range(3):
        await auth.register()
    seen: list[str] = []
    token = ""
    while True:
        page = await auth.admin.ListUsers(
            auth_pb2.ListUsersRequest(page_size=2, page_token=token, role=role_pb2.ROLE_USER),
            metadata=bearer(moderator),
        )
        assert len(page.users) <= 2
        seen += [u.user_id for u in page.users]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) >= 3
    filtered = await auth.admin.ListUsers(
        auth_pb2.ListUsersRequest(email_prefix="moderator-"), metadata=bearer(moderator)
    )
    assert filtered.users and all(u.email.startswith("moderator-") for u in filtered.users)


async def test_role_change_is_in_the_audit_log(auth: AuthStack) -> None:
    admin_user, admin = await auth.staff("ADMIN")
    target = await auth.register()
    await auth.admin.SetUserRole(
        auth_pb2.SetUserRoleRequest(
            user_id=target.user_id, role=role_pb2.ROLE_MODERATOR, reason="promo"
        ),
        metadata=bearer(admin),
    )
    events = await auth.admin.ListAuthAuditEvents(
        auth_pb2.ListAuthAuditEventsRequest(target_id=target.user_id, action="user.role_changed"),
        metadata=bearer(admin),
    )
    assert len(events.events) == 1
    event = events.events[0]
    assert event.actor_id == admin_user.user_id
    assert dict(event.details) == {
        "old_role": "USER",
        "new_role": "MODERATOR",
        "reason": "promo",
        "ip": "127.0.0.1",  # no gateway in front: the peer's address
    }


async def test_malformed_user_id_is_invalid_argument(auth: AuthStack) -> None:
    _, moderator = await auth.staff("MODERATOR")
    failure = await rpc_failure(
        auth.admin.GetUser(auth_pb2.GetUserRequest(user_id="abc"), metadata=bearer(moderator))
    )
    assert (failure.code, failure.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["user_id"])


async def test_a_deactivated_admin_loses_even_the_non_strict_admin_reads_at_once(
    auth: AuthStack,
) -> None:
    _, super_admin = await auth.staff("SUPER_ADMIN")
    admin_user, admin = await auth.staff("ADMIN")
    await auth.admin.ListUsers(auth_pb2.ListUsersRequest(), metadata=bearer(admin))
    await auth.admin.DeactivateUser(
        auth_pb2.DeactivateUserRequest(user_id=admin_user.user_id, reason="left the company"),
        metadata=bearer(super_admin),
    )
    for call in (
        auth.admin.ListUsers(auth_pb2.ListUsersRequest(), metadata=bearer(admin)),
        auth.admin.ListAuthAuditEvents(
            auth_pb2.ListAuthAuditEventsRequest(), metadata=bearer(admin)
        ),
    ):
        failure = await rpc_failure(call)
        assert (failure.code, failure.reason) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "ACCOUNT_DISABLED",
        )


async def test_create_superadmin_on_an_existing_account_ends_its_sessions(auth: AuthStack) -> None:
    user, tokens = await auth.user_with_token()
    # Without --reset-existing an existing email (a typo, say) changes nothing.
    refused = auth.cli(
        "create-superadmin", "--email", user.email, "--password-stdin", stdin="typo 99 secret\n"
    )
    assert refused.returncode == 2, refused.stderr
    assert "exists: nothing was changed; --reset-existing" in refused.stderr
    still = await auth.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(tokens))
    assert still.user.role == role_pb2.ROLE_USER
    result = auth.cli(
        "create-superadmin",
        "--email",
        user.email,
        "--password-stdin",
        "--reset-existing",
        stdin="a recovered 99 secret\n",
    )
    assert result.returncode == 0, result.stderr
    refresh = await rpc_failure(
        auth.public.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=tokens.refresh_token))
    )
    assert refresh.reason == "TOKEN_REVOKED"
    strict = await rpc_failure(auth.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(tokens)))
    assert strict.reason == "TOKEN_REVOKED"


async def test_a_recovery_racing_a_password_change_still_sets_its_password(
    auth: AuthStack,
) -> None:
    """Review of 2026-12-05: `create-superadmin --reset-existing` read the account unlocked
    and set its password by compare-and-set on the hash it had read: a ChangePassword
    committing in between made the set match nothing, while the account was still promoted
    and reported ready, with the holder's password. The account is now locked before it is
    read; the recovery waits for the change, then sets its own password. The audit row names
    the operator, the old role and what the recovery did."""
    import asyncpg

    user, _ = await auth.user_with_token()
    holder = await asyncpg.connect(
        auth.dbs.url(auth.dbs.auth_owner_role, auth.dbs.auth_database, driver="postgresql")
    )
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user.user_id)
        recovery = asyncio.create_task(
            asyncio.to_thread(
                auth.cli,
                "create-superadmin",
                "--email",
                user.email,
                "--password-stdin",
                "--reset-existing",
                stdin="a recovered 99 secret\n",
            )
        )
        deadline = asyncio.get_running_loop().time() + 60
        # pg_locks, not pg_stat_activity: another role's wait events are not shown to this one.
        while not await holder.fetchval(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid <> pg_backend_pid()"
        ):
            if recovery.done():
                raise AssertionError(f"the recovery never waited: {recovery.result()}")
            assert asyncio.get_running_loop().time() < deadline, "the recovery never waited"
            await asyncio.sleep(0.05)
        # The holder's change (its hash stands for a new password) commits first.
        await holder.execute(
            "UPDATE users SET password_hash = 'changed-by-the-holder' WHERE id = $1",
            user.user_id,
        )
        await transaction.commit()
        result = await recovery
        assert result.returncode == 0, result.stderr
        tokens = await auth.login(user.email, "a recovered 99 secret")
        me = await auth.public.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(tokens))
        assert me.user.role == role_pb2.ROLE_SUPER_ADMIN
        details = await holder.fetchval(
            "SELECT details FROM audit_events WHERE action = 'user.superadmin_promoted'"
            " AND target_id = $1",
            user.user_id,
        )
        actor = await holder.fetchval(
            "SELECT actor_id FROM audit_events WHERE action = 'user.superadmin_promoted'"
            " AND target_id = $1",
            user.user_id,
        )
    finally:
        await holder.close()
    assert actor.startswith("operator:")
    assert '"old_role": "user"' in str(details) and '"password_reset": "true"' in str(details)
