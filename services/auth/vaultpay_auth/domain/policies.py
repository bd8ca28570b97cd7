"""Input rules (email, password, names) and the role-management rules.

Pure functions: each returns or raises domain errors, so handlers and tests share them.

    >>> normalize_email("  Alice@Example.COM ")
    'alice@example.com'
"""

from __future__ import annotations

import re
import unicodedata
import uuid

from zxcvbn import zxcvbn  # type: ignore[import-untyped]

from vaultpay_auth.domain.errors import (
    CannotChangeOwnRoleError,
    DeactivatedByHigherRankError,
    DeactivatorUnknownError,
    InsufficientPermissionsError,
    UserAlreadyDeactivatedError,
)
from vaultpay_common.context import Role
from vaultpay_common.errors import FieldViolation, ValidationError
from vaultpay_common.text import (
    NORMALIZED_AT_MOST,
    has_control_characters,
    has_line_breaks,
    normalized,
)

__all__ = [
    "check_may_manage",
    "check_may_reactivate",
    "check_may_redeactivate",
    "check_registration",
    "check_user_id",
    "email_violations",
    "guessability_violations",
    "normalize_email",
    "normalize_password",
    "password_spellings",
    "password_violations",
    "require_reason",
]

_EMAIL = re.compile(
    r"^[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+\Z"
)
MAX_EMAIL = 254
MIN_PASSWORD, MAX_PASSWORD = 12, 128
# zxcvbn's score (0-4) a password needs: 3 is "safely unguessable" against an online attack
# and a throttled offline one. The estimate reads the first 20 characters: its cost grows
# fast with the length (see `guessability_violations`), and a password whose first 20
# characters are hard to guess is.
MIN_PASSWORD_SCORE = 3
_ESTIMATED_PREFIX = 20
MAX_NAME = 100
# Shorter local parts ("a@…") would forbid ordinary letters; only meaningful ones are checked.
MIN_LOCAL_PART_CHECKED = 4
# The rule checks the email's local part ("root" of root@example.com), in any case: a
# password holding the whole address holds its name part too, so the message names the part.
_CONTAINS_EMAIL = "must not contain the email address or its name part (before the @)"
MAX_REASON = 500


def normalize_email(raw: str) -> str:
    """NFKC, trimmed, lower case; a value far too long to be an email is only trimmed and
    lower-cased (`text.normalized`), for `email_violations` to refuse and a sign-in to find
    no account."""
    return normalized("NFKC", raw).lower()


def email_violations(email: str, field: str = "email") -> list[FieldViolation]:
    if not email:
        return [FieldViolation(field, "is required")]
    if len(email) > MAX_EMAIL:
        return [FieldViolation(field, f"must be at most {MAX_EMAIL} characters")]
    if not _EMAIL.match(email):
        return [FieldViolation(field, "is not a valid email address")]
    return []


def normalize_password(typed: str) -> str:
    """`typed` in Unicode NFC: what every password is judged (`password_violations`, the
    guessability estimate) and hashed as, and checked as first. "\u00e9" typed as one
    character (U+00E9) on one keyboard and as "e" and a combining acute (U+0301) on another
    (macOS, some input methods, a paste) is one password, as NIST SP 800-63B 5.1.1.2 asks;
    hashed as typed, they were two, and the user was locked out on the other device. NFC,
    not NFKC: NFKC folds distinct characters ("\ufb01" into "fi", "\u00b2" into "2") and would
    shrink the space of passwords. Not trimmed: spaces are part of a password. A password
    longer than NORMALIZED_AT_MOST characters is returned as typed, without any work (the
    normalisation is quadratic in a run of combining marks: `vaultpay_common.text`), for
    `password_violations` to refuse for its length and a sign-in to match nothing."""
    if len(typed) > NORMALIZED_AT_MOST:
        return typed
    return unicodedata.normalize("NFC", typed)


def password_spellings(typed: str) -> tuple[str, ...]:
    """What a typed password is checked against a stored hash as, in this order: its NFC form
    (`normalize_password`), then, only when that differs from what was typed, the form as
    typed, which is what a hash made before passwords were normalised is of. One more bcrypt,
    and only for such input; a sign-in proven by the second re-hashes the first."""
    nfc = normalize_password(typed)
    return (nfc,) if nfc == typed else (nfc, typed)


def password_violations(password: str, email: str, field: str = "password") -> list[FieldViolation]:
    """Why `password`, as it will be hashed (`normalize_password`'s form: its length counts
    the characters of that form), is refused, or nothing."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        return [FieldViolation(field, f"must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")]
    # A letter of any script (a Hindi or Cyrillic password has letters too), a digit 0-9 or
    # another script's (`\d`).
    if not any(ch.isalpha() for ch in password) or not re.search(r"\d", password):
        return [FieldViolation(field, "must contain at least one letter and one digit")]
    local_part = email.split("@")[0]
    if len(local_part) >= MIN_LOCAL_PART_CHECKED and local_part in password.lower():
        return [FieldViolation(field, _CONTAINS_EMAIL)]
    return []


def guessability_violations(
    password: str, email: str, field: str = "password", *, full_name: str = ""
) -> list[FieldViolation]:
    """Why a password of the right shape (`password_violations`) is still among the first
    an attacker tries (a common password, a keyboard walk, a repeat, a date, the user's own
    name: zxcvbn's estimate, NIST SP 800-63B's "commonly used or compromised" check), or
    nothing. `password1234` and `qwerty123456` have 12 characters, letters and digits.

    CPU-heavy for some inputs (its l33t matching grows with the distinct substitution
    characters: tens of milliseconds for the 20 characters it reads, a second for 64), so
    services run it off their event loop, after their throttles (`PasswordEstimator`)."""
    own_words = [email.split("@")[0], *full_name.split()]
    estimate = zxcvbn(password[:_ESTIMATED_PREFIX], user_inputs=own_words)
    if estimate["score"] >= MIN_PASSWORD_SCORE:
        return []
    hint = estimate["feedback"]["warning"] or "it follows a pattern attackers try early"
    return [
        FieldViolation(
            field, f"is too easy to guess ({hint.rstrip('.')}); try a few unrelated words"
        )
    ]


def _name_violations(full_name: str) -> list[FieldViolation]:
    if not full_name:
        return [FieldViolation("full_name", "is required")]
    if len(full_name) > MAX_NAME:
        return [FieldViolation("full_name", f"must be at most {MAX_NAME} characters")]
    if has_control_characters(full_name):
        return [FieldViolation("full_name", "must not contain control characters")]
    return []


def check_registration(email: str, password: str, full_name: str) -> None:
    """Raises one ValidationError listing every invalid field."""
    violations = [
        *email_violations(email),
        *password_violations(password, email),
        *_name_violations(full_name),
    ]
    if violations:
        raise ValidationError(violations)


def check_user_id(user_id: str, field: str = "user_id") -> None:
    """User ids are UUIDs; anything else is invalid input, not a database error."""
    try:
        uuid.UUID(user_id)
    except ValueError as exc:
        raise ValidationError.single(field, "must be a user id (UUID)") from exc


def require_reason(reason: str, *, required: bool) -> str:
    """A staff reason: one line people read (staff views, the audit log), so no control, bidi
    or zero-width character and no line break (review of 2026-12-05: "fraud\u202e…" read
    reversed, a LINE SEPARATOR split it), as wallet's and transfer's texts."""
    reason = reason.strip()
    if required and not reason:
        raise ValidationError.single("reason", "is required")
    if len(reason) > MAX_REASON:
        raise ValidationError.single("reason", f"must be at most {MAX_REASON} characters")
    if has_control_characters(reason):
        raise ValidationError.single(
            "reason", "must not contain control or invisible formatting characters"
        )
    if has_line_breaks(reason):
        raise ValidationError.single("reason", "must be one line")
    return reason


def check_may_manage(
    *, actor_id: str, actor_role: Role, target_id: str, target_role: Role, new_role: Role | None
) -> None:
    """Whether an actor may change a target's role (new_role) or status (new_role None).

    Nobody acts on themselves; only a super_admin acts on an admin or super_admin, or grants
    admin or super_admin. (The "last super_admin" rule needs the database and lives in the
    handler.)
    """
    if actor_id == target_id:
        raise CannotChangeOwnRoleError()
    privileged = target_role >= Role.ADMIN or (new_role is not None and new_role >= Role.ADMIN)
    if privileged and actor_role < Role.SUPER_ADMIN:
        raise InsufficientPermissionsError(
            "only a super_admin may grant, remove or act on admin roles"
        )
    if actor_role < Role.ADMIN:
        raise InsufficientPermissionsError("requires ROLE_ADMIN or higher")


def check_may_redeactivate(
    *, actor_id: str, actor_role: Role, deactivator_id: str | None, deactivator_role: Role | None
) -> None:
    """Whether an actor may make a deactivation in force theirs (with their reason): the
    deactivator on record may (a new reason of their own: an update, audited), so may someone
    who outranks the deactivator (their role now) or, as a super_admin, one with none on record
    (then only their rank may lift it). Anyone else: UserAlreadyDeactivatedError, the one in
    force stays (an admin told OK would believe their reason recorded, and a super_admin
    answered OK while an admin's deactivation stayed would leave it to any admin to lift)."""
    if deactivator_id is not None and deactivator_id == actor_id:
        return
    if deactivator_role is None:  # none on record (or no longer a user): maybe a super_admin
        if actor_role >= Role.SUPER_ADMIN:
            return
    elif actor_role > deactivator_role:
        return
    raise UserAlreadyDeactivatedError(deactivator_role)


def check_may_reactivate(*, actor_role: Role, deactivator_role: Role | None) -> None:
    """Whether an actor (who may manage the user: `check_may_manage`) may lift a deactivation
    made by someone whose role is now `deactivator_role` (None: no deactivator on record).
    As wallet's staff freezes: an equal rank may take over a colleague's decision (both
    reasons are in the audit log), a lower rank may not undo it, and an unknown deactivator
    may have been a super_admin."""
    if deactivator_role is None:
        if actor_role < Role.SUPER_ADMIN:
            raise DeactivatorUnknownError()
    elif deactivator_role > actor_role:
        raise DeactivatedByHigherRankError(deactivator_role)
