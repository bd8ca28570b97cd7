"""The auth domain's errors, each with the stable reason clients switch on."""

from __future__ import annotations

from vaultpay_common.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InsufficientPermissionsError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    UnauthenticatedError,
)

__all__ = [
    "AccountDisabledError",
    "CannotChangeOwnRoleError",
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


class PasswordHashingBusyError(RateLimitedError):
    """Too many password computations are already waiting; retrying later helps."""

    reason = "RATE_LIMITED"
    default_message = "the service is busy checking passwords, try again shortly"
