"""What the audit trail records about security events (ASVS 5.0 V16): refused and throttled
sign-ins, logout, failed password changes, a refresh token presented twice, and staff reads of
users' data and of the audit log itself.

Every event names the client address. None holds a password, a token or an email address in
the clear: an address someone typed is recorded as its keyed hash, so staff can correlate the
attempts on one address (the same email always gives the same hash) while a copy of the log
reveals nothing that the key holder could not already see.

    fingerprint = EmailFingerprint(settings.derived_key("audit-email"))
    entry = sign_in_refused(fingerprint("ghost@example.com"), None, "192.0.2.1", "invalid_credentials")
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from vaultpay_auth.domain.model import User
from vaultpay_common.audit.model import AuditEntry, AuditRecord
from vaultpay_common.context import Principal

__all__ = [
    "ANONYMOUS",
    "AUDIT_EVENTS_LISTED",
    "LOGIN_FAILED",
    "LOGIN_THROTTLED",
    "LOGOUT",
    "PASSWORD_CHANGE_FAILED",
    "REFRESH_REUSE_DETECTED",
    "USERS_LISTED",
    "USER_VIEWED",
    "EmailFingerprint",
    "audit_events_listed",
    "logged_out",
    "password_change_failed",
    "refresh_reuse_detected",
    "sign_in_refused",
    "sign_in_throttled",
    "user_viewed",
    "users_listed",
]

LOGIN_FAILED = "user.login_failed"
LOGIN_THROTTLED = "user.login_throttled"
LOGOUT = "user.logout"
PASSWORD_CHANGE_FAILED = "user.password_change_failed"  # noqa: S105 (an action, no secret)
REFRESH_REUSE_DETECTED = "session.refresh_reuse_detected"
USER_VIEWED = "user.viewed"
USERS_LISTED = "users.listed"
AUDIT_EVENTS_LISTED = "audit_events.listed"
# The actor of an attempt nobody has proven to be anyone yet.
ANONYMOUS = "anonymous"


class EmailFingerprint:
    """Keyed HMAC-SHA256 (hex) of a normalised email address.

    Keyed, because a bare hash of an email is reversed by hashing a list of addresses.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the email fingerprint key must be at least 32 bytes")
        self._key = key

    def __call__(self, email: str) -> str:
        return hmac.new(self._key, email.encode(), hashlib.sha256).hexdigest()


def _claimed(email_hash: str, user: User | None) -> tuple[str, str]:
    """The target of an attempt on an account: the user if the email is theirs, else the hash."""
    return ("user", user.id) if user is not None else ("email", email_hash)


def sign_in_refused(email_hash: str, user: User | None, client_ip: str, reason: str) -> AuditEntry:
    """A sign-in refused after its password was checked (`reason`: invalid_credentials,
    account_disabled, password_replaced: the password matched the one a change or reset
    replaced while it was being checked)."""
    return AuditEntry(
        LOGIN_FAILED,
        *_claimed(email_hash, user),
        {"reason": reason, "email_hash": email_hash, "ip": client_ip},
        actor_id=ANONYMOUS,
    )


def sign_in_throttled(
    email_hash: str, user: User | None, client_ip: str, scopes: Sequence[str]
) -> AuditEntry:
    """The first refusal of a throttle window for an account or an address."""
    return AuditEntry(
        LOGIN_THROTTLED,
        *_claimed(email_hash, user),
        {"scope": ",".join(scopes), "email_hash": email_hash, "ip": client_ip},
        actor_id=ANONYMOUS,
    )


def logged_out(user_id: str, session_id: str, client_ip: str) -> AuditEntry:
    return AuditEntry(LOGOUT, "user", user_id, {"session_id": session_id, "ip": client_ip})


def password_change_failed(user_id: str, client_ip: str, reason: str) -> AuditEntry:
    """`reason`: wrong_current_password, throttled."""
    return AuditEntry(PASSWORD_CHANGE_FAILED, "user", user_id, {"reason": reason, "ip": client_ip})


def refresh_reuse_detected(user_id: str, session_id: str, client_ip: str) -> AuditEntry:
    """A refresh token presented again after it was used: someone holds a copy, and the session
    was ended. It targets the user, so an investigator searching by the victim's id finds it;
    its actor is `ANONYMOUS`, since the token proves nobody (the thief or the victim may have
    presented it), and the address is the presenter's."""
    return AuditEntry(
        REFRESH_REUSE_DETECTED,
        "user",
        user_id,
        {"session_id": session_id, "ip": client_ip},
        actor_id=ANONYMOUS,
    )


def _role(viewer: Principal) -> str:
    return viewer.role.name if viewer.role else ""


def user_viewed(viewer: Principal, user_id: str, client_ip: str) -> AuditEntry:
    return AuditEntry(
        USER_VIEWED,
        "user",
        user_id,
        {"ip": client_ip},
        actor_id=viewer.subject,
        actor_role=_role(viewer),
    )


def users_listed(
    viewer: Principal,
    shown: Sequence[User],
    filters: dict[str, str],
    client_ip: str,
) -> AuditEntry:
    """A page of users shown to staff: who was shown, under which (non-secret) filters."""
    details = {
        **filters,
        "count": str(len(shown)),
        "user_ids": ",".join(u.id for u in shown),
        "ip": client_ip,
    }
    return AuditEntry(
        USERS_LISTED, "users", "", details, actor_id=viewer.subject, actor_role=_role(viewer)
    )


def audit_events_listed(
    viewer: Principal,
    shown: Sequence[AuditRecord],
    filters: dict[str, str],
    client_ip: str,
) -> AuditEntry:
    """A page of the audit log shown to staff (ListAuthAuditEvents): its rows name users and
    their addresses, so it is a staff read of users' data like `users_listed`, with the filters
    set, how many rows and which (their sequences) were shown."""
    details = {
        **filters,
        "count": str(len(shown)),
        "sequences": ",".join(str(r.sequence) for r in shown),
        "ip": client_ip,
    }
    return AuditEntry(
        AUDIT_EVENTS_LISTED,
        "audit_events",
        "",
        details,
        actor_id=viewer.subject,
        actor_role=_role(viewer),
    )
