"""The wallet domain's errors, each with the stable reason clients switch on.

Codes follow google/rpc/code.proto: a state the caller must change first is
FAILED_PRECONDITION (a locked PIN is a wallet state, lifted by time, reset or staff, so
PIN_LOCKED is FAILED_PRECONDITION too, not RESOURCE_EXHAUSTED, which we keep for quotas).
A wrong PIN is also FAILED_PRECONDITION (the request is well formed; the stored PIN does
not match), with the remaining attempts in the metadata.
"""

from __future__ import annotations

from datetime import datetime

from vaultpay_common.context import Role
from vaultpay_common.errors import (
    AbortedError,
    AlreadyExistsError,
    FailedPreconditionError,
    InsufficientPermissionsError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    metadata_time,
    wallet_frozen_refusal,
)

__all__ = [
    "FreezeHeldByHigherRankError",
    "FreezeSetterUnknownError",
    "InvalidPinError",
    "LimitsHeldByHigherRankError",
    "PinAlreadySetError",
    "PinChangedError",
    "PinCheckInProgressError",
    "PinHashingBusyError",
    "PinLockedError",
    "PinNotSetError",
    "PinResetRateLimitedError",
    "PinResetTokenInvalidError",
    "SettingNotFoundError",
    "StaffOutrankedError",
    "StaffSelfActionError",
    "WalletAlreadyExistsError",
    "WalletAlreadyFrozenError",
    "WalletClosedError",
    "WalletFrozenError",
    "WalletHasBalanceError",
    "WalletHasPendingWithdrawalError",
    "WalletIdCollisionError",
    "WalletNotFoundError",
]


class WalletNotFoundError(NotFoundError):
    """No wallet, or another user's wallet (the two are indistinguishable on purpose)."""

    reason = "WALLET_NOT_FOUND"
    default_message = "no such wallet"


class WalletAlreadyExistsError(AlreadyExistsError):
    reason = "WALLET_ALREADY_EXISTS"
    default_message = "this user already has a wallet"


class WalletIdCollisionError(Exception):
    """A freshly drawn `VPY-` id is taken; the use case draws another. Never reaches a client."""


class WalletFrozenError(FailedPreconditionError):
    """A freeze holds the wallet. A money movement's refusal (`held_by`) says which, as
    metadata `freeze_reason` (FREEZE_REASON_SELF or FREEZE_REASON_ADMIN, the names GetWallet
    shows) and `until` (its end, `metadata_time`; absent for a freeze without one)."""

    reason = "WALLET_FROZEN"
    default_message = "the wallet is frozen"

    @classmethod
    def held_by(cls, source: str | None, until: datetime | None) -> WalletFrozenError:
        """`source`: "SELF" or "ADMIN" (FreezeSource's values), None when no freeze explains
        the status. The message says who can lift it."""
        if source is None:
            return cls()
        # The wording is shared with transfer's ledger refusal (vaultpay_common.errors).
        message, metadata = wallet_frozen_refusal(
            source, "" if until is None else metadata_time(until)
        )
        return cls(message, metadata=metadata)


class WalletAlreadyFrozenError(FailedPreconditionError):
    """A staff freeze that would end before the staff freeze in force (metadata `until`: its
    end, empty for none). Lift that freeze first to set a shorter one."""

    reason = "WALLET_ALREADY_FROZEN"
    default_message = "staff froze the wallet for longer"

    def __init__(self, until: datetime | None) -> None:
        until_text = "" if until is None else metadata_time(until)
        ends = f"until {until_text}" if until_text else "with no end"
        super().__init__(
            f"staff already froze this wallet {ends}; a staff freeze never shortens it (to end "
            "it sooner, unfreeze the wallet, which also lifts the owner's own freeze and a PIN "
            "lockout)",
            metadata={"until": until_text},
        )


class WalletClosedError(FailedPreconditionError):
    reason = "WALLET_CLOSED"
    default_message = "the wallet is closed"


class WalletHasBalanceError(FailedPreconditionError):
    reason = "WALLET_HAS_BALANCE"
    default_message = "only a wallet with a zero balance can be closed"


class WalletHasPendingWithdrawalError(FailedPreconditionError):
    """A withdrawal is still on its way to the bank: were the bank to refuse it, the money would
    come back to the wallet, so the wallet stays open until the payout has settled. Enforced by
    transfer's trigger on wallets (migration t0003), under the wallet's row lock."""

    reason = "WALLET_HAS_PENDING_WITHDRAWAL"
    default_message = "a withdrawal is still being paid out; close the wallet once it has settled"


class StaffSelfActionError(PermissionDeniedError):
    """A staff member changing their own wallet through the admin API (freezing, unfreezing,
    overriding limits). Staff act on other people's wallets only, the way nobody changes their
    own role (auth) or decides their own KYC submission (kyc): otherwise a moderator lifts a
    staff freeze put on them and an admin raises their own limits. The reason is auth's, as
    the meaning is the same: a privilege turned on oneself."""

    reason = "CANNOT_MODIFY_SELF"
    default_message = "staff cannot change their own wallet; another staff member must do it"


class StaffOutrankedError(InsufficientPermissionsError):
    """A staff member acting through the admin API on the wallet of someone they do not
    outrank (a moderator freezing an admin's wallet, an admin another admin's limits). auth
    refuses the same thing for roles and status (`check_may_manage`) with this class's
    reason, INSUFFICIENT_PERMISSIONS, so clients see one vocabulary."""

    default_message = "staff act only on the wallets of users ranked below them"


class LimitsHeldByHigherRankError(PermissionDeniedError):
    """A staff member replacing a wallet's admin limits (AdminSetWalletLimits is a PUT of the
    whole set) while an override that someone ranked above them set is in force: an admin
    does not undo a super_admin's clamp. Metadata `held_by_role`: the setter's role as auth
    has it now, or "unknown" for an override that records no setter (only a super_admin
    replaces those). Nothing is written."""

    reason = "LIMITS_HELD_BY_HIGHER_RANK"
    default_message = "a staff member ranked above you set this wallet's limits"

    def __init__(self, setter_role: Role | None) -> None:
        held_by = "unknown" if setter_role is None else setter_role.claim
        who = "whose setter is not recorded" if setter_role is None else f"set by a {held_by}"
        needed = (
            "super_admin" if setter_role in (None, Role.SUPER_ADMIN) else f"{held_by} or higher"
        )
        super().__init__(
            f"admin limits {who} are in force; only a {needed} may replace them",
            metadata={"held_by_role": held_by},
        )


class FreezeHeldByHigherRankError(PermissionDeniedError):
    """A staff member lifting (AdminUnfreezeWallet) or replacing (AdminFreezeWallet) a staff
    freeze in force that someone ranked above them set: a moderator does not undo an admin's
    fraud hold. Metadata `held_by_role`: the setter's role as auth has it now ("admin"),
    never who they are. Nothing is lifted or written."""

    reason = "FREEZE_HELD_BY_HIGHER_RANK"
    default_message = "a staff member ranked above you froze this wallet"

    def __init__(self, setter_role: Role) -> None:
        who = setter_role.claim
        above = "" if setter_role is Role.SUPER_ADMIN else " or higher"
        super().__init__(
            f"a staff freeze set by a {who} is in force; only a {who}{above} may lift or "
            "replace it",
            metadata={"held_by_role": who},
        )


class FreezeSetterUnknownError(PermissionDeniedError):
    """A staff member below super_admin lifting or replacing a staff freeze in force that
    records no setter (`set_by` empty: a row written outside the API, which always records
    one). Whoever set it may have been a super_admin, so only a super_admin may; auth is not
    asked (there is no one to ask about). Nothing is lifted or written."""

    reason = "FREEZE_SETTER_UNKNOWN"
    default_message = (
        "the staff freeze in force records no one who set it; only a super_admin may lift or "
        "replace it"
    )


class PinNotSetError(FailedPreconditionError):
    reason = "PIN_NOT_SET"
    default_message = "no transaction PIN has been set for this wallet"


class PinAlreadySetError(FailedPreconditionError):
    reason = "PIN_ALREADY_SET"
    default_message = "a PIN is already set; change or reset it instead"


class InvalidPinError(FailedPreconditionError):
    """A wrong PIN; `metadata["remaining_attempts"]` says how many tries are left."""

    reason = "INVALID_PIN"
    default_message = "the PIN is wrong"

    def __init__(self, remaining_attempts: int) -> None:
        super().__init__(
            f"the PIN is wrong; {remaining_attempts} attempt(s) left before the wallet locks",
            metadata={"remaining_attempts": str(remaining_attempts)},
        )
        self.remaining_attempts = remaining_attempts


class PinLockedError(FailedPreconditionError):
    """Too many wrong PINs: the wallet is frozen (PIN_LOCKOUT) until `metadata["until"]`
    (`metadata_time`: RFC 3339 UTC with `Z`); no `until` when the end is unknown."""

    reason = "PIN_LOCKED"
    default_message = "too many wrong PINs; the wallet is locked"

    def __init__(self, until: datetime | None = None) -> None:
        until_text = "" if until is None else metadata_time(until)
        message = self.default_message + (f" until {until_text}" if until_text else "")
        super().__init__(message, metadata={"until": until_text} if until_text else None)


class PinChangedError(FailedPreconditionError):
    """A retry of a PIN check that matched a PIN since changed: its stored OK no longer
    stands (a check that passed for a movement the ledger refused must not pass again after
    the owner changed a leaked PIN). The caller sends the request anew, with a new id."""

    reason = "PIN_CHANGED"
    default_message = (
        "the PIN changed after this request was checked; send it again with a new request_id"
    )


class PinCheckInProgressError(AbortedError):
    """Every attempt of the lockout rule is counted by checks of this wallet's PIN that are
    still running: nothing is locked, the caller retries once they have settled (ABORTED,
    like any other conflict with concurrent requests)."""

    reason = "PIN_CHECK_IN_PROGRESS"
    default_message = "other checks of this wallet's PIN are still running; retry shortly"


class PinResetTokenInvalidError(FailedPreconditionError):
    """The reset token is unknown, expired, already used or superseded (one reason for all,
    so the answer does not help anyone probing tokens)."""

    reason = "PIN_RESET_TOKEN_INVALID"
    default_message = "the PIN reset token is invalid, expired or already used"


class PinResetRateLimitedError(RateLimitedError):
    """The wallet was mailed PIN_RESET_HOURLY_CAP reset codes within the last hour
    (RESOURCE_EXHAUSTED; RetryInfo: when the oldest of them leaves the hour). Nothing is
    minted, mailed or audited. A request while a code is under a minute old is not refused: it
    answers that code's expiry."""

    reason = "PIN_RESET_RATE_LIMITED"
    default_message = "too many PIN reset codes were mailed in the last hour; try again later"


class PinHashingBusyError(RateLimitedError):
    """Too many PINs are already waiting to be hashed for SetPin and ResetPin (the owner's
    work, on a thread of its own apart from the money movements'): nothing is written, and
    retrying later helps (RESOURCE_EXHAUSTED, RetryInfo)."""

    reason = "RATE_LIMITED"
    default_message = "the service is busy checking PINs, try again shortly"


class SettingNotFoundError(NotFoundError):
    reason = "SETTING_NOT_FOUND"
    default_message = "no such setting"
