"""The staff rank rule: whom a staff member may act on, by role alone.

Staff act only on people ranked strictly below them, except a super_admin, who acts on anyone
(another super_admin included). It is part of the role vocabulary every service shares (as
`Role`'s order is), not of one service's business: wallet applies it to staff changes of a
wallet (`vaultpay_wallet.domain.staff`), kyc to decisions on a KYC submission
(`vaultpay_kyc.domain.model`), each raising its own error with the reason
INSUFFICIENT_PERMISSIONS, which auth's `check_may_manage` uses for the same refusal. Acting on
oneself is each service's earlier, separate rule.

    staff_outranks(Role.ADMIN, Role.MODERATOR)  # True
    staff_outranks(Role.MODERATOR, Role.MODERATOR)  # False: equals do not act on each other
    staff_outranks(Role.SUPER_ADMIN, Role.SUPER_ADMIN)  # True

Whom a super_admin may act on does not depend on anyone's role, so a rule asked for a
super_admin needs no role looked up (`acts_on_anyone`): the services ask auth for the other
person's role only when the answer can matter, and a super_admin can still act while auth is
down or does not know the other person.
"""

from __future__ import annotations

from vaultpay_common.context import Role

__all__ = ["acts_on_anyone", "staff_outranks"]


def acts_on_anyone(actor_role: Role) -> bool:
    """Whether staff with `actor_role` may act on anyone, whatever their role (a super_admin):
    then no one's role need be asked."""
    return actor_role is Role.SUPER_ADMIN


def staff_outranks(actor_role: Role, owner_role: Role) -> bool:
    """Whether staff with `actor_role` may act on what a user with `owner_role` owns."""
    return acts_on_anyone(actor_role) or actor_role > owner_role
