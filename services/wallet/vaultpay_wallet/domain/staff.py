"""Who on the staff may act on whose wallet: the rank rule of the admin API's changes.

The rule itself is shared with kyc's decisions (`vaultpay_common.ranks.staff_outranks`); this
module raises wallet's error for it. auth's rule for SetUserRole and DeactivateUser
(`check_may_manage` in auth's domain policies) applied to wallets: staff act only on people
ranked strictly below them, except a super_admin, who acts on anyone (another super_admin
included). Acting on oneself is refused
before this rule is asked (`Wallet.check_staff_may_change`, CANNOT_MODIFY_SELF), as in auth.

On every pair auth's actions admit (an admin or super_admin acting) the two rules agree.
auth has no moderator action; here a moderator acts on users' wallets only, not on another
moderator's, as an admin does not act on another admin: equal rank is refused below
super_admin.

    check_staff_outranks_owner(Role.ADMIN, Role.MODERATOR)  # allowed
    check_staff_outranks_owner(Role.MODERATOR, Role.ADMIN)  # StaffOutrankedError

A staff freeze in force answers to a second rule: who set it. Staff lift or replace only the
staff freezes of people ranked no higher than them (equal rank allowed: an admin takes over
another admin's hold, a moderator another moderator's; a super_admin anything):

    check_may_override_staff_freeze(Role.ADMIN, Role.ADMIN)  # allowed
    check_may_override_staff_freeze(Role.MODERATOR, Role.ADMIN)  # FreezeHeldByHigherRankError

A wallet's admin limit overrides answer to the same rule (AdminSetWalletLimits replaces
them all): staff replace them only when every override in force set by someone else was set
by a rank no higher than theirs (`check_may_replace_staff_limits`; no recorded setter: only
a super_admin).

A staff freeze that records no setter (`Freeze.set_by` empty: the API always records one, so
only a row written outside it) has no rank to compare: only a super_admin, who outranks
whoever set it, lifts or replaces it (`check_setter_recorded`, FreezeSetterUnknownError).
"""

from __future__ import annotations

from vaultpay_common.context import Role
from vaultpay_common.ranks import acts_on_anyone, staff_outranks
from vaultpay_wallet.domain.errors import (
    FreezeHeldByHigherRankError,
    FreezeSetterUnknownError,
    LimitsHeldByHigherRankError,
    StaffOutrankedError,
)
from vaultpay_wallet.domain.model import Freeze

__all__ = [
    "check_may_override_staff_freeze",
    "check_may_replace_staff_limits",
    "check_setter_recorded",
    "check_staff_outranks_owner",
]


def check_staff_outranks_owner(actor_role: Role, owner_role: Role) -> None:
    """Raises StaffOutrankedError (PERMISSION_DENIED, INSUFFICIENT_PERMISSIONS) unless a
    staff member with `actor_role` may change a wallet whose owner has `owner_role`."""
    if not staff_outranks(actor_role, owner_role):
        raise StaffOutrankedError()


def check_may_override_staff_freeze(actor_role: Role, setter_role: Role) -> None:
    """Raises FreezeHeldByHigherRankError (PERMISSION_DENIED, FREEZE_HELD_BY_HIGHER_RANK)
    when the staff freeze in force was set by someone ranked above `actor_role`. Not the
    owner rule: equal rank may take over a colleague's hold (their reasons are in the audit
    log), a lower rank may not undo it."""
    if setter_role > actor_role:
        raise FreezeHeldByHigherRankError(setter_role)


def check_setter_recorded(held: Freeze, actor_role: Role) -> None:
    """Raises FreezeSetterUnknownError (PERMISSION_DENIED, FREEZE_SETTER_UNKNOWN) when the
    staff freeze in force records no setter and `actor_role` is below super_admin: it may
    have been a super_admin's, and an unknown setter is never asked of auth."""
    if not held.set_by and not acts_on_anyone(actor_role):
        raise FreezeSetterUnknownError()


def check_may_replace_staff_limits(actor_role: Role, setter_role: Role | None) -> None:
    """Raises LimitsHeldByHigherRankError (PERMISSION_DENIED, LIMITS_HELD_BY_HIGHER_RANK) when
    an admin override in force was set by someone ranked above `actor_role`, or records no
    setter (None) and `actor_role` is below super_admin. Equal rank may take over."""
    if setter_role is None:
        if not acts_on_anyone(actor_role):
            raise LimitsHeldByHigherRankError(None)
    elif setter_role > actor_role:
        raise LimitsHeldByHigherRankError(setter_role)
