"""Staff use cases: list and inspect users, change roles, deactivate and reactivate; and the
peer services' lookups of a user (GetUserContact's contact, GetUserRole's role and state).

The rules: only a super_admin grants, removes or acts on admin and super_admin; nobody acts
on themselves; the last active super_admin is never demoted or deactivated (checked under
row locks, FOR NO KEY UPDATE, on every super_admin, so two concurrent demotions cannot both
pass).

Staff reads of users' data (GetUser, ListUsers) are audited with the ids shown and the
client address (ASVS 5.0 V16); a peer service's lookup (no staff viewer) is not. So is every
page of the audit log (ListAuthAuditEvents: its rows name users and their addresses), and the
staff changes (role, deactivation, reactivation) record the client address too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeGuard

from vaultpay_auth.domain.errors import (
    InsufficientPermissionsError,
    LastSuperAdminError,
    UserNotFoundError,
)
from vaultpay_auth.domain.model import User
from vaultpay_auth.domain.policies import (
    check_may_manage,
    check_may_reactivate,
    check_may_redeactivate,
    check_user_id,
    normalize_email,
    require_reason,
)
from vaultpay_auth.domain.security_events import audit_events_listed, user_viewed, users_listed
from vaultpay_auth.service_layer.ports import AuthUnitOfWork, UserFilter
from vaultpay_common.audit import AuditEntry, AuditQuery, AuditRecord
from vaultpay_common.context import Principal, Role
from vaultpay_common.errors import AbortedError, ValidationError
from vaultpay_common.pagination import SliceOf

__all__ = ["AdminService", "UserStanding"]


@dataclass(frozen=True, slots=True)
class UserStanding:
    """What GetUserRole answers about a user: their role, and whether they are active."""

    role: Role
    active: bool


def _staff(viewer: Principal | None) -> TypeGuard[Principal]:
    return viewer is not None and not viewer.is_service


class AdminService:
    def __init__(
        self, uow: Callable[[], AuthUnitOfWork], *, fingerprint: Callable[[str], str]
    ) -> None:
        """`fingerprint` turns an email (prefix) into the keyed hash the audit log records."""
        self._uow = uow
        self._fingerprint = fingerprint

    async def list_users(
        self,
        query: UserFilter,
        after: tuple[datetime, str] | None,
        limit: int,
        *,
        viewer: Principal | None = None,
        client_ip: str = "",
    ) -> SliceOf[User]:
        """At most `limit` users after `after`, and whether more follow."""
        async with self._uow() as uow:
            rows = list(await uow.users.list(query, after, limit + 1))
            shown = rows[:limit]
            if _staff(viewer):
                filters = self._audited_filters(query)
                await uow.audit(users_listed(viewer, shown, filters, client_ip))
                await uow.commit()
        return SliceOf(shown, len(rows) > limit)

    def _audited_filters(self, query: UserFilter) -> dict[str, str]:
        """The filters of a listing as the audit log keeps them: an email prefix only hashed."""
        filters: dict[str, str] = {}
        if query.role is not None:
            filters["role"] = query.role.name
        if query.active is not None:
            filters["active"] = str(query.active).lower()
        if query.email_prefix:
            filters["email_prefix_hash"] = self._fingerprint(normalize_email(query.email_prefix))
        return filters

    async def list_audit_events(
        self,
        query: AuditQuery,
        before_sequence: int | None,
        limit: int,
        *,
        viewer: Principal,
        client_ip: str,
    ) -> SliceOf[AuditRecord]:
        """At most `limit` events before `before_sequence`, newest first, and whether more
        follow. Always a staff read (ListAuthAuditEvents has no peer caller), audited in the
        read's transaction as `list_users` is: a page whose row cannot be written is not
        shown."""
        async with self._uow() as uow:
            rows = await uow.audit_events(query, before_sequence, limit + 1)
            shown = rows[:limit]
            filters = query.set_filters()
            await uow.audit(audit_events_listed(viewer, shown, filters, client_ip))
            await uow.commit()
        return SliceOf(shown, len(rows) > limit)

    async def get_user(
        self, user_id: str, *, viewer: Principal | None = None, client_ip: str = ""
    ) -> User:
        check_user_id(user_id)
        async with self._uow() as uow:
            user = await uow.users.get(user_id)
            if user is not None and _staff(viewer):
                await uow.audit(user_viewed(viewer, user.id, client_ip))
                await uow.commit()
        if user is None:
            raise UserNotFoundError()
        return user

    async def role_of(self, user_id: str) -> UserStanding:
        """The user's current role for a peer service's rank rule (GetUserRole), and whether
        they are active, and nothing else about them (not their contact). Being deactivated
        does not change the role (a deactivated admin still outranks a moderator): a rank
        check ignores `active`, while kyc's approval refuses a deactivated owner with it. Not
        a staff read, so not audited. Raises UserNotFoundError for a user auth does not know."""
        check_user_id(user_id)
        async with self._uow() as uow:
            user = await uow.users.get(user_id)
        if user is None:
            raise UserNotFoundError()
        return UserStanding(user.role, user.active)

    async def _lock_managed_user(
        self, uow: AuthUnitOfWork, actor: Principal, user_id: str, new_role: Role | None
    ) -> User:
        """Locks rows in one fixed order (every super_admin by id, then the target) and
        re-reads the actor inside the transaction, so a concurrent demotion of the actor
        or of the other super_admins is seen, and no two admin actions can deadlock. Then
        applies the role rules to the actor's *current* role.

        The locks are FOR NO KEY UPDATE, the lock the UPDATE of a user takes (no key column
        changes, no user is deleted): two staff actions still take turns on every
        super_admin's row, so two demotions cannot both see another super_admin left, and
        a password change or sign-in of the target or of a super_admin still waits its turn.
        A refresh's KEY SHARE on its user does not conflict: with FOR UPDATE, one
        super_admin's stalled refresh (up to the 120 s idle-in-transaction timeout) held
        back every staff action on anyone (review of 5fbe4fb). A refresh of the target's
        session is ordered against the revocation at the session's row
        (`AccountService.refresh`).
        """
        check_user_id(user_id)
        super_admins = await uow.users.lock_active_super_admins()
        current = await uow.users.get(actor.subject)
        if current is None or not current.active:
            raise InsufficientPermissionsError("the acting account is no longer active")
        target = await uow.users.get(user_id, for_update=True)
        if target is None:
            raise UserNotFoundError()
        if target.role is Role.SUPER_ADMIN and target.active and target.id not in super_admins:
            raise AbortedError("a concurrent change touched this user; retry")
        check_may_manage(
            actor_id=actor.subject,
            actor_role=current.role,
            target_id=target.id,
            target_role=target.role,
            new_role=new_role,
        )
        return target

    @staticmethod
    async def _refuse_last_super_admin(uow: AuthUnitOfWork, target: User) -> None:
        if target.role is Role.SUPER_ADMIN and target.active:
            others = [uid for uid in await uow.users.lock_active_super_admins() if uid != target.id]
            if not others:
                raise LastSuperAdminError()

    async def set_role(
        self, actor: Principal, user_id: str, role: Role | None, reason: str, *, client_ip: str
    ) -> User:
        if role is None:
            raise ValidationError.single("role", "must be a role")
        reason = require_reason(reason, required=True)
        async with self._uow() as uow:
            target = await self._lock_managed_user(uow, actor, user_id, role)
            if target.role == role:
                return target
            if role is not Role.SUPER_ADMIN:
                await self._refuse_last_super_admin(uow, target)
            old_role = target.role
            target.role = role
            target.updated_at = datetime.now(UTC)
            await uow.users.update(target)
            # Sessions end so that the next token carries the new role.
            await uow.sessions.revoke_all_for_user(target.id, "role_changed")
            await uow.audit(
                AuditEntry(
                    "user.role_changed",
                    "user",
                    target.id,
                    {
                        "old_role": old_role.name,
                        "new_role": role.name,
                        "reason": reason,
                        "ip": client_ip,
                    },
                )
            )
            await uow.commit()
        return target

    async def deactivate(
        self, actor: Principal, user_id: str, reason: str, *, client_ip: str
    ) -> User:
        reason = require_reason(reason, required=True)
        async with self._uow() as uow:
            target = await self._lock_managed_user(uow, actor, user_id, None)
            if not target.active:
                return await self._take_over_deactivation(
                    uow, actor, target, reason, client_ip=client_ip
                )
            await self._refuse_last_super_admin(uow, target)
            await self._record_deactivation(uow, actor, target, reason, {"ip": client_ip})
        return target

    async def _take_over_deactivation(
        self, uow: AuthUnitOfWork, actor: Principal, target: User, reason: str, *, client_ip: str
    ) -> User:
        """A deactivation of a user already deactivated (under `_lock_managed_user`'s locks):
        the deactivator's own retry (the same reason) changes nothing; the deactivator with a
        new reason, or someone who outranks the deactivator, makes it theirs (their reason;
        theirs to lift), audited with the reason and deactivator it replaces; anyone else is
        refused (`check_may_redeactivate`)."""
        if target.deactivated_by == actor.subject and target.deactivation_reason == reason:
            return target
        current = await uow.users.get(actor.subject)
        assert current is not None  # read under the same locks by _lock_managed_user
        deactivator = (
            None if target.deactivated_by is None else await uow.users.get(target.deactivated_by)
        )
        check_may_redeactivate(
            actor_id=actor.subject,
            actor_role=current.role,
            deactivator_id=target.deactivated_by,
            deactivator_role=None if deactivator is None else deactivator.role,
        )
        replaced = {
            "replaces_reason": target.deactivation_reason,
            "replaces_deactivated_by": target.deactivated_by or "",
            "ip": client_ip,
        }
        await self._record_deactivation(uow, actor, target, reason, replaced)
        return target

    @staticmethod
    async def _record_deactivation(
        uow: AuthUnitOfWork, actor: Principal, target: User, reason: str, details: dict[str, str]
    ) -> None:
        """`target` deactivated by `actor` for `reason`, its sessions revoked, audited with
        `details` besides, and committed."""
        target.active = False
        target.deactivation_reason = reason
        target.deactivated_by = actor.subject
        target.updated_at = datetime.now(UTC)
        await uow.users.update(target)
        revoked = await uow.sessions.revoke_all_for_user(target.id, "deactivated")
        await uow.audit(
            AuditEntry(
                "user.deactivated",
                "user",
                target.id,
                {"reason": reason, "revoked_sessions": str(revoked), **details},
            )
        )
        await uow.commit()

    async def reactivate(
        self, actor: Principal, user_id: str, reason: str, *, client_ip: str
    ) -> User:
        """Lifts a deactivation, with a reason, unless someone ranked above the actor made it
        (their role now) or nobody is on record as having made it and the actor is below
        super_admin. The deactivator's role is read after the super_admins' rows are locked,
        so a concurrent change of a super_admin's role is seen."""
        reason = require_reason(reason, required=True)
        async with self._uow() as uow:
            target = await self._lock_managed_user(uow, actor, user_id, None)
            if target.active:
                return target
            current = await uow.users.get(actor.subject)
            assert current is not None  # read under the same locks by _lock_managed_user
            deactivator = (
                None
                if target.deactivated_by is None
                else await uow.users.get(target.deactivated_by)
            )
            check_may_reactivate(
                actor_role=current.role,
                deactivator_role=None if deactivator is None else deactivator.role,
            )
            lifted_reason = target.deactivation_reason
            target.active = True
            target.deactivation_reason = ""
            target.deactivated_by = None
            target.updated_at = datetime.now(UTC)
            await uow.users.update(target)
            await uow.audit(
                AuditEntry(
                    "user.reactivated",
                    "user",
                    target.id,
                    {
                        "reason": reason,
                        "deactivation_reason": lifted_reason,
                        "deactivated_by": "" if deactivator is None else deactivator.id,
                        "ip": client_ip,
                    },
                )
            )
            await uow.commit()
        return target
