"""The auth domain's errors, each with the stable reason clients switch on."""

from __future__ import annotations

from vaultpay_common.context import Role
from vaultpay_common.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InsufficientPermissionsError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    UnauthenticatedError,
    UnavailableError,
)

__all__ = [
    "AccountDisabledError",
    "CannotChangeOwnRoleError",
    "DeactivatedByHigherRankError",
    "DeactivatorUnknownError",
    "EmailAlreadyRegisteredError",
    "InsufficientPermissionsError",
    "InvalidCredentialsError",
    "LastSuperAdminError",
    "LoginThrottledError",
    "PasswordHashingBusyError",
    "RefreshTokenExpiredError",
    "RefreshTokenInvalidError",
    "RefreshTokenReusedError",
    "SignUpThrottledError",
    "ThrottleBusyError",
    "ThrottleUnavailableError",
    "UserAlreadyDeactivatedError",
    "UserNotFoundError",
]


class EmailAlreadyRegisteredError(AlreadyExistsError):
    reason = "EMAIL_ALREADY_REGISTERED"
    default_message = "an account with this email already exists"


class InvalidCredentialsError(UnauthenticatedError):
    reason = "INVALID_CREDENTIALS"
    default_message = "the email or password is wrong"


class AccountDisabledError(UnauthenticatedError):
    reason = "ACCOUNT_DISABLED"
    default_message = "this account has been deactivated"


class RefreshTokenInvalidError(UnauthenticatedError):
    reason = "TOKEN_INVALID"
    default_message = "the refresh token is not valid"


class RefreshTokenExpiredError(UnauthenticatedError):
    reason = "TOKEN_EXPIRED"
    default_message = "the refresh token has expired, sign in again"


class RefreshTokenReusedError(UnauthenticatedError):
    reason = "TOKEN_REVOKED"
    default_message = "the refresh token was already used; the session has been revoked"


class UserNotFoundError(NotFoundError):
    reason = "USER_NOT_FOUND"
    default_message = "no such user"


class CannotChangeOwnRoleError(PermissionDeniedError):
    reason = "CANNOT_MODIFY_SELF"
    default_message = "nobody may change their own role or status"


class DeactivatedByHigherRankError(PermissionDeniedError):
    """A staff member reactivating a user whom someone ranked above them deactivated: an
    admin does not bring back whom a super_admin shut out. Metadata `deactivated_by_role`:
    the deactivator's role now ("super_admin"), never who they are. Nothing is written."""

    reason = "DEACTIVATED_BY_HIGHER_RANK"
    default_message = "a staff member ranked above you deactivated this user"

    def __init__(self, deactivator_role: Role) -> None:
        who = deactivator_role.claim
        above = "" if deactivator_role is Role.SUPER_ADMIN else " or higher"
        super().__init__(
            f"a {who} deactivated this user; only a {who}{above} may reactivate them",
            metadata={"deactivated_by_role": who},
        )


class DeactivatorUnknownError(PermissionDeniedError):
    """A staff member below super_admin reactivating a user whose deactivation records no
    deactivator (deactivated before auth kept one, migration 0010): it may have been a
    super_admin, so only a super_admin may. Nothing is written."""

    reason = "DEACTIVATOR_UNKNOWN"
    default_message = (
        "this user's deactivation records no one who made it; only a super_admin may "
        "reactivate them"
    )


class UserAlreadyDeactivatedError(FailedPreconditionError):
    """A staff member deactivating a user whom someone else deactivated, and whom they do not
    outrank: the deactivation in force stays, with its reason and deactivator, and the caller
    is told rather than answered OK as if theirs were recorded (a super_admin's deactivation
    takes over an admin's: then only a super_admin may lift it). Metadata
    `deactivated_by_role`: the deactivator's role now, or "unknown". Nothing is written."""

    reason = "USER_ALREADY_DEACTIVATED"
    default_message = "this user is already deactivated by someone else"

    def __init__(self, deactivator_role: Role | None) -> None:
        who = "unknown" if deactivator_role is None else deactivator_role.claim
        by = "before auth recorded who" if deactivator_role is None else f"by a {who}"
        super().__init__(
            f"this user is already deactivated ({by}); its reason stands",
            metadata={"deactivated_by_role": who},
        )


class LastSuperAdminError(FailedPreconditionError):
    reason = "LAST_SUPER_ADMIN"
    default_message = "the last active super_admin cannot be demoted or deactivated"


class LoginThrottledError(RateLimitedError):
    """Too many password attempts for an account or from an address (RetryInfo attached).

    `scopes` names the counters over their limit ("account", "ip"); `first_refusal` is True for
    the first refusal of a counter's window, the one worth an audit row (later refusals in the
    same window would only flood the append-only log).
    """

    reason = "RATE_LIMITED"
    default_message = "too many failed password attempts, try again later"

    def __init__(
        self,
        retry_after_seconds: int,
        message: str | None = None,
        *,
        scopes: tuple[str, ...] = (),
        first_refusal: bool = False,
    ) -> None:
        super().__init__(retry_after_seconds, message)
        self.scopes = scopes
        self.first_refusal = first_refusal


class SignUpThrottledError(RateLimitedError):
    reason = "RATE_LIMITED"
    default_message = "too many sign-ups, try again later"


class ThrottleBusyError(RateLimitedError):
    """The attempt could not be counted: this process's Redis connections were all in use
    (more concurrent sign-ins or sign-ups than it takes). Refused rather than let through
    uncounted, which turned the throttles off under a burst an attacker controls."""

    reason = "RATE_LIMITED"
    default_message = "too many sign-ins at once, try again shortly"


class ThrottleUnavailableError(UnavailableError):
    """The attempt could not be counted: Redis answered but refused (a read-only replica
    after a failover, out of memory, a wrong password or ACL). Refused: letting attempts
    through uncounted would last as long as the misconfiguration, however long."""

    default_message = "sign-in is briefly unavailable, try again shortly"


class PasswordHashingBusyError(RateLimitedError):
    """Too many password computations are already waiting; retrying later helps."""

    reason = "RATE_LIMITED"
    default_message = "the service is busy checking passwords, try again shortly"
