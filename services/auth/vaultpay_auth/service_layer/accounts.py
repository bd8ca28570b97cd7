"""Account use cases: register, login, refresh, logout, profile, password change.

Each public method is one use case; database work happens inside one unit of work and
nothing is reported done before its commit returns. bcrypt runs outside transactions.

Refusals cost as little as possible, cheapest first: Register checks its input, then the
sign-up throttle (per client address and for the whole service), then whether the email is
taken, and only then runs bcrypt, at sign-up priority (sign-ins are served first, and a
sign-up is refused when too many wait). A taken email answers ALREADY_EXISTS at once: the
answer itself says so (the contract; see docs/decisions.md), so its speed reveals nothing more.

Security events (refused and throttled sign-ins, logout, failed and successful password
changes, a refresh token presented twice) are audited with the client address; a refusal's row
is written in a short transaction of its own, so it outlives the refusal it records.

Passwords are judged and hashed in Unicode NFC (`policies.normalize_password`), and checked as
NFC first, then, when it differs, as typed (`policies.password_spellings`: hashes made before
the normalisation are of what was typed); a sign-in proven as typed re-hashes the NFC form.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from vaultpay_auth.domain.errors import (
    AccountDisabledError,
    EmailAlreadyRegisteredError,
    InvalidCredentialsError,
    LoginThrottledError,
    PasswordHashingBusyError,
    RefreshTokenExpiredError,
    RefreshTokenInvalidError,
    RefreshTokenReusedError,
    UserNotFoundError,
)
from vaultpay_auth.domain.model import Session, User
from vaultpay_auth.domain.policies import (
    check_registration,
    normalize_email,
    normalize_password,
    password_spellings,
    password_violations,
)
from vaultpay_auth.domain.security_events import (
    logged_out,
    password_change_failed,
    refresh_reuse_detected,
    sign_in_refused,
    sign_in_throttled,
)
from vaultpay_auth.service_layer.ports import (
    AccessTokenIssuer,
    AuthUnitOfWork,
    HashPriority,
    LoginThrottle,
    PasswordEstimator,
    PasswordHasher,
    SignUpThrottle,
    estimate_inline,
)
from vaultpay_auth.service_layer.tokens import hash_refresh_token, new_refresh_token
from vaultpay_common.audit import AuditEntry
from vaultpay_common.context import Role
from vaultpay_common.errors import AbortedError, FieldViolation, ValidationError
from vaultpay_common.input_checks import InputChecks
from vaultpay_common.settling import Settling

__all__ = ["AccountService", "IssuedTokens"]

log = logging.getLogger(__name__)


# The throttle's account keys (it hashes them), one family each, neither a prefix of the other:
# a sign-in's attempts count on its email's key, a password change's on its user's. Login takes
# any string as an email, so with the email's key bare a Login for "change-attempts:<user id>"
# counted on that user's change counter: five of them blocked the owner's ChangePassword
# (review of 2026-12-05).
_LOGIN_ATTEMPTS_KEY = "login:"
_CHANGE_ATTEMPTS_KEY = "change-attempts:"


def _retrieve_quietly(task: asyncio.Task[str | None]) -> None:
    """Reads the outcome of a settling check whose caller may be gone, so a failure is logged
    once, not reported as never retrieved (the caller, if still there, gets it too)."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None and not isinstance(exc, PasswordHashingBusyError):
        log.warning("a password check's settlement failed", exc_info=exc)


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime


def _by_user(user: User, action: str, details: dict[str, str] | None = None) -> AuditEntry:
    """An audit entry for something the user did through a public RPC (no principal yet)."""
    return AuditEntry(
        action, "user", user.id, details or {}, actor_id=user.id, actor_role=user.role.name
    )


def _new_password_shape(new: str, current: str, email: str) -> None:
    """ChangePassword's new password on its own: its length and letters (`password_violations`)
    and not the current one (two inputs of the request compared: nothing secret). Both in NFC
    (`normalize_password`): the current password in another spelling is the same password."""
    violations = password_violations(new, email, field="new_password")
    if not violations and new == current:
        violations = [FieldViolation("new_password", "must differ from the current password")]
    if violations:
        raise ValidationError(violations)


class AccountService:
    def __init__(
        self,
        uow: Callable[[], AuthUnitOfWork],
        hasher: PasswordHasher,
        issuer: AccessTokenIssuer,
        throttle: LoginThrottle,
        *,
        refresh_ttl: timedelta,
        sign_up_throttle: SignUpThrottle,
        fingerprint: Callable[[str], str],
        estimator: PasswordEstimator = estimate_inline,
    ) -> None:
        """`fingerprint` turns an email into the keyed hash the audit log records;
        `estimator` judges a new password's guessability (the server's runs off its loop)."""
        self._estimate = estimator
        self._uow = uow
        self._hasher = hasher
        self._issuer = issuer
        self._throttle = throttle
        self._sign_ups = sign_up_throttle
        self._fingerprint = fingerprint
        self._refresh_ttl = refresh_ttl
        self._dummy_hash: str | None = None
        # Password checks settling their throttle reservation for callers that went away.
        self._settling = Settling("password checks")

    async def drain(self, within: float) -> int:
        """At shutdown, before the hasher closes: waits up to `within` seconds for the password
        checks still settling for callers that went away, and returns how many did not end
        (logged): closing the hasher would cancel them, their attempts left counted."""
        return await self._settling.drain(within)

    async def _verify_and_settle(
        self,
        counter: str,
        client_ip: str,
        verify: Callable[[asyncio.Event], Awaitable[str | None]],
    ) -> str | None:
        """`verify(admitted)` and its throttle reservation's settlement, in a task of their own
        that a caller going away does not cut short once the hash has started (`admitted`): a
        right password (`verify` returns the spelling that matched: `_matching_spelling`, whose
        spellings of one password are one attempt) gives the reservation back (`succeeded`), a
        wrong one (None) stays counted, one the hasher was too busy to check is released. Run
        in the caller, a cancellation (the gateway's 15 s behind a long hashing queue, a
        client's deadline) kept the attempt counted as a failure whatever the password: five
        slow sign-ins locked out a user with the right one (review of 2026-12-05). A caller
        that goes away while its check still waits for a worker takes it out of the queue
        (nobody would read its verdict, and a queue of abandoned checks made every later
        sign-in wait for them), and its reservation is given back: no password was checked. A
        caller that goes away learns nothing of the verdict."""
        admitted = asyncio.Event()

        async def run() -> str | None:
            try:
                verified = await verify(admitted)
            except (PasswordHashingBusyError, asyncio.CancelledError):
                # Refused a worker, or taken out of the queue: no password was checked. Shielded:
                # a caller leaving now must not cut the release short (the attempt would count).
                await asyncio.shield(self._throttle.release(counter, client_ip))
                raise
            if verified is not None:
                await self._throttle.succeeded(counter, client_ip)
            return verified

        task = asyncio.ensure_future(run())
        self._settling.track(task)
        task.add_done_callback(_retrieve_quietly)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not admitted.is_set():
                task.cancel()  # still queued: out of the queue, the reservation given back
            raise

    async def _record(self, entry: AuditEntry) -> None:
        """Audits a refusal in a short transaction of its own (the caller raises next)."""
        async with self._uow() as uow:
            await uow.audit(entry)
            await uow.commit()

    async def register(
        self, email: str, password: str, full_name: str, client_ip: str = ""
    ) -> User:
        email, full_name = normalize_email(email), full_name.strip()
        password = normalize_password(password)  # judged and hashed as NFC
        check_registration(email, password, full_name)
        await self._sign_ups.reserve(client_ip)
        # After the throttle: the estimate costs CPU an address must not buy without limit.
        weak = await self._estimate(password, email, "password", full_name=full_name)
        if weak:
            raise ValidationError(weak)
        async with self._uow() as uow:
            if await uow.users.get_by_email(email) is not None:
                raise EmailAlreadyRegisteredError()
        password_hash = await self._hasher.hash(password, priority=HashPriority.SIGN_UP)
        now = datetime.now(UTC)
        user = User(
            id=str(uuid.uuid4()),
            email=email,
            full_name=full_name,
            password_hash=password_hash,
            role=Role.USER,
            active=True,
            deactivation_reason="",
            created_at=now,
            updated_at=now,
        )
        async with self._uow() as uow:
            await uow.users.add(user)  # the unique index settles concurrent registrations
            await uow.audit(_by_user(user, "user.registered"))
            await uow.commit()
        log.info("user registered", extra={"user_id": user.id})
        return user

    async def _matching_spelling(
        self,
        spellings: tuple[str, ...],
        password_hash: str,
        *,
        admitted: asyncio.Event | None = None,
    ) -> str | None:
        """The first of a typed password's `spellings` (`password_spellings`: NFC, then as
        typed) that `password_hash` was made from, or None. The second costs one more bcrypt,
        only when the first does not match and the typed form is not NFC, in the same worker's
        turn (`first_match`): queued again, it could be refused a worker after the first was
        checked, and a legacy user's right password counted as a failure (review of
        2026-12-05)."""
        return await self._hasher.first_match(
            spellings, password_hash, priority=HashPriority.SIGN_IN, admitted=admitted
        )

    async def _verify_or_waste_time(
        self,
        spellings: tuple[str, ...],
        user: User | None,
        *,
        admitted: asyncio.Event | None = None,
    ) -> str | None:
        """The spelling that matched (`_matching_spelling`); without a user, hashes anyway,
        each spelling as a wrong password would be, so timing reveals nothing."""
        sign_in = HashPriority.SIGN_IN
        if user is not None:
            return await self._matching_spelling(spellings, user.password_hash, admitted=admitted)
        if self._dummy_hash is None:
            # The first unknown email's check hashes twice; admitted at its first hash (review
            # of 2026-12-05: a caller leaving during it took it out of the throttle's count
            # while its hash ran for nobody).
            self._dummy_hash = await self._hasher.hash(
                "not-a-real-password-0", priority=sign_in, admitted=admitted
            )
        await self._matching_spelling(spellings, self._dummy_hash, admitted=admitted)
        return None

    async def login(self, email: str, password: str, client_ip: str) -> tuple[IssuedTokens, User]:
        email = normalize_email(email)
        if not email or not password:
            field = "email" if not email else "password"
            raise ValidationError.single(field, "is required")
        spellings = password_spellings(password)
        counter = _LOGIN_ATTEMPTS_KEY + email
        try:
            await self._throttle.reserve(counter, client_ip)
        except LoginThrottledError as refused:
            if refused.first_refusal:
                await self._record_throttled(email, client_ip, refused.scopes)
            raise
        async with self._uow() as uow:
            found = await uow.users.get_by_email(email)
        matched = await self._verify_and_settle(
            counter,
            client_ip,
            lambda admitted: self._verify_or_waste_time(spellings, found, admitted=admitted),
        )
        if matched is None:
            await self._record(
                sign_in_refused(self._fingerprint(email), found, client_ip, "invalid_credentials")
            )
            raise InvalidCredentialsError()
        assert found is not None
        upgraded = await self._upgraded_hash(
            spellings[0], found, proven_as_nfc=matched == spellings[0]
        )
        tokens, user, replaced = await self._sign_in(found, client_ip, upgraded)
        # The hash changed while bcrypt ran: a password change, or another sign-in that
        # upgraded the same password's hash (`_upgraded_hash`). Only the first is refused.
        if replaced and user is not None and user.active:
            # The reservation was settled by the first check (the password was right then).
            same_password = await self._verify_or_waste_time(spellings, user)
            if same_password is not None:
                tokens, user, replaced = await self._sign_in(user, client_ip, None)
        if replaced:
            await self._record(
                sign_in_refused(self._fingerprint(email), found, client_ip, "password_replaced")
            )
            raise InvalidCredentialsError()
        if tokens is None or user is None:
            await self._record(
                sign_in_refused(self._fingerprint(email), found, client_ip, "account_disabled")
            )
            raise AccountDisabledError()
        return tokens, user

    async def _still_the_password(self, user: User, current: tuple[str, ...]) -> str:
        """The stored hash that the `current` password's spellings were proven against: the
        one read before, or, when a sign-in upgraded it since (`_upgraded_hash`; the same
        password at another cost or in NFC), the upgraded one once `current` is checked
        against it. A real change meanwhile keeps the old hash, so the compare-and-set refuses
        (ABORTED)."""
        async with self._uow() as uow:
            now = await uow.users.get(user.id)
        if now is None or now.password_hash == user.password_hash:
            return user.password_hash
        matches = await self._matching_spelling(current, now.password_hash)
        return now.password_hash if matches is not None else user.password_hash

    async def _upgraded_hash(
        self, password: str, user: User, *, proven_as_nfc: bool = True
    ) -> str | None:
        """A new hash of the password just proven (`password`: its NFC form), when the stored
        one was made at another cost than the service's setting now, or of the password as
        typed rather than in NFC (`proven_as_nfc` false: made before passwords were
        normalised), None otherwise. Without it, a raised cost left every earlier account's
        hash at the old one, and a sign-in of an existing email took a measurably different
        time than an unknown email's (hashed at today's cost): who has an account showed;
        and a hash of a decomposed "e\u0301" kept refusing the same password typed as
        "\u00e9". Best effort: a busy hasher skips it, never the sign-in."""
        if proven_as_nfc and not self._hasher.needs_rehash(user.password_hash):
            return None
        try:
            return await self._hasher.hash(password, priority=HashPriority.SIGN_IN)
        except PasswordHashingBusyError:
            return None

    async def _sign_in(
        self, found: User, client_ip: str, upgraded: str | None
    ) -> tuple[IssuedTokens | None, User | None, bool]:
        """(tokens, the user as locked, replaced): a session for `found` if it is still
        active with the hash that was verified. Re-read under a lock: a deactivation or
        role change that committed while bcrypt ran must not yield a session or a token with
        the old role, and a password change (or reset) must not yield one for the password it
        replaced: that change revoked every session it found, and this one would have
        outlived it. `upgraded` replaces the verified hash in the same transaction."""
        tokens: IssuedTokens | None = None
        async with self._uow() as uow:
            # FOR NO KEY UPDATE (`for_update`): a sign-in and a change of the user (role,
            # deactivation, password) take turns; a refresh's KEY SHARE is not waited for.
            user = await uow.users.get(found.id, for_update=True)
            replaced = user is not None and user.password_hash != found.password_hash
            if user is not None and user.active and not replaced:
                tokens = await self._open_session(uow, user)
                await uow.audit(_by_user(user, "user.login", {"ip": client_ip}))
                if upgraded is not None:
                    await uow.users.set_password_hash(user.id, user.password_hash, upgraded)
                    log.info(
                        "password re-hashed at the current cost, in NFC",
                        extra={"user_id": user.id},
                    )
                await uow.commit()
        return tokens, user, replaced

    async def _record_throttled(self, email: str, client_ip: str, scopes: tuple[str, ...]) -> None:
        async with self._uow() as uow:
            user = await uow.users.get_by_email(email)
            await uow.audit(sign_in_throttled(self._fingerprint(email), user, client_ip, scopes))
            await uow.commit()

    async def _open_session(self, uow: AuthUnitOfWork, user: User) -> IssuedTokens:
        now = datetime.now(UTC)
        session = Session(str(uuid.uuid4()), user.id, now, now + self._refresh_ttl, None)
        await uow.sessions.add(session)
        return await self._issue(uow, user, session)

    async def _issue(self, uow: AuthUnitOfWork, user: User, session: Session) -> IssuedTokens:
        refresh = new_refresh_token()
        await uow.sessions.add_refresh_token(
            hash_refresh_token(refresh), session.id, user.id, session.expires_at
        )
        access, access_expires_at = self._issuer.issue_access_token(
            user, session.id, not_after=session.expires_at
        )
        return IssuedTokens(access, access_expires_at, refresh, session.expires_at)

    async def refresh(self, refresh_token: str, client_ip: str) -> IssuedTokens:
        """A new token pair for a live session, its refresh token spent; a spent token
        presented again revokes the session (reuse).

        Locks, after the refresh token (FOR UPDATE): the session, FOR SHARE (FOR NO KEY
        UPDATE when the token is spent: that presentation revokes the session, and two of
        them each holding a share would deadlock upgrading), then the user, FOR KEY SHARE.
        Every revocation UPDATEs the session row (FOR NO KEY UPDATE), so the session's lock
        alone orders a refresh against it: a revocation either committed before the lock is
        granted (the session is read revoked, and the user, read after it, inactive after a
        deactivation: ACCOUNT_DISABLED) or waits for this commit and revokes the new tokens'
        session with the rest. Read without locks, a refresh that stalled after reading the
        session as live (a process or VM pause) signed a token after the revocation
        committed, its lifetime counted from then: it outlived the peers' memory of the
        revocation (review of 2026-12-05). The user's KEY SHARE conflicts only with a delete
        or a key change of the user, which nothing does: the user's writers (FOR NO KEY
        UPDATE) neither wait for a refresh there nor are starved by a stream of them. With
        the user locked FOR SHARE first (5fbe4fb), a password change waited for every refresh
        of the user, new share lockers passed a queued writer (a deactivation of a
        compromised account could be held off until its statement timeout), and a stalled
        refresh of one super_admin held back every staff action (review of 5fbe4fb).

        The lock order of each pair: a refresh's (token, session, user KEY SHARE) against
        the other side's, in order ("NKU": FOR NO KEY UPDATE, what an UPDATE of a row takes;
        an insert's foreign-key check takes KEY SHARE on the row it names). Only the session
        row is locked in conflicting modes by a refresh and any of them (the purge also the
        token, in the refresh's order), so no pair can wait in a cycle:

          logout             session (NKU)                      meets it at the session
          password change    user (NKU), its other sessions     at a session it revokes
                             (NKU)                              (never its own session's)
          role change,       active super_admins by id (NKU),   at a session it revokes;
          deactivation       target (NKU), target's sessions    not at a super_admin's row
                             (NKU)
          reactivation       super_admins by id, target (NKU)   nowhere
          CLI reset          user (NKU), its sessions (NKU)     at a session it revokes
          retention purge    ended sessions' tokens, then the   at the token, then the
                             sessions (DELETE: FOR UPDATE)      session: the same order
          login (_sign_in)   user (NKU), new session, token     nowhere
          refresh, same      token, session (NKU if spent)      at the token (same one) or
          session                                               the session (another)
        """
        if not refresh_token:
            raise ValidationError.single("refresh_token", "is required")
        token_hash = hash_refresh_token(refresh_token)
        async with self._uow() as uow:
            record = await uow.sessions.get_refresh_token_for_update(token_hash)
            if record is None:
                raise RefreshTokenInvalidError()
            spent = record.used_at is not None
            session = await uow.sessions.get(
                record.session_id, for_share=not spent, for_update=spent
            )
            # After the session's lock: a deactivation that committed before it is seen.
            user = await uow.users.get(record.user_id, for_key_share=True)
            if session is None or session.revoked_at is not None:
                # A deactivation revokes every session of the user: its holder is told the
                # account is disabled (ACCOUNT_DISABLED, as introspection and the README say),
                # not to sign in again.
                if user is None or not user.active:
                    raise AccountDisabledError()
                raise RefreshTokenReusedError("the session has been revoked")
            if record.used_at is not None:
                # Someone holds a stolen copy: end the whole family, for both holders.
                await uow.sessions.revoke(session.id, "refresh_token_reuse")
                await uow.audit(refresh_reuse_detected(session.user_id, session.id, client_ip))
                await uow.commit()
                log.warning("refresh token reuse", extra={"session_id": session.id})
                raise RefreshTokenReusedError()
            now = datetime.now(UTC)
            if now >= record.expires_at or not session.is_live(now):
                raise RefreshTokenExpiredError()
            if user is None or not user.active:
                raise AccountDisabledError()
            await uow.sessions.mark_refresh_token_used(token_hash)
            tokens = await self._issue(uow, user, session)
            await uow.commit()
        return tokens

    async def logout(self, session_id: str, *, user_id: str = "", client_ip: str = "") -> None:
        async with self._uow() as uow:
            await uow.sessions.revoke(session_id, "logout")
            await uow.audit(logged_out(user_id, session_id, client_ip))
            await uow.commit()

    async def get_me(self, user_id: str) -> User:
        async with self._uow() as uow:
            user = await uow.users.get(user_id)
        if user is None:
            raise UserNotFoundError()
        return user

    async def change_password(
        self, user_id: str, session_id: str, current: str, new: str, client_ip: str
    ) -> int:
        async with self._uow() as uow:
            user = await uow.users.get(user_id)
        if user is None:
            raise UserNotFoundError()
        # Judged and hashed as NFC; the current password is checked as NFC, then as typed.
        new, spellings = normalize_password(new), password_spellings(current)
        # The request's own faults first, in one refusal, before a guess is counted, a hash
        # run or an audit row written: they are input, not guesses (as Login's empty
        # password). Only the guessability estimate waits for the throttle (below).
        with InputChecks() as checks:
            if not current:
                checks.refuse("current_password", "is required")
            checks.run(lambda: _new_password_shape(new, spellings[0], user.email))
        # A stolen access token must not allow unthrottled guessing of the password: its
        # guesses are counted, on a counter of their own. On Login's (the email's), anyone
        # who typed five wrong passwords for the email blocked the signed-in owner's change
        # of password, the remedy, for as long as the attack went on (review of 2026-12-05).
        counter = _CHANGE_ATTEMPTS_KEY + user.id
        try:
            await self._throttle.reserve(counter, client_ip)
        except LoginThrottledError as refused:
            if refused.first_refusal:
                await self._record(password_change_failed(user.id, client_ip, "throttled"))
            raise
        verified = await self._verify_and_settle(
            counter,
            client_ip,
            lambda admitted: self._matching_spelling(
                spellings, user.password_hash, admitted=admitted
            ),
        )
        if verified is None:
            await self._record(password_change_failed(user.id, client_ip, "wrong_current_password"))
            raise ValidationError.single("current_password", "is not the current password")
        # zxcvbn costs up to tens of milliseconds of a thread: after the throttle and the
        # current password, so a stolen access token cannot run it unthrottled.
        violations = await self._estimate(new, user.email, "new_password", full_name=user.full_name)
        if violations:
            raise ValidationError(violations)
        new_hash = await self._hasher.hash(new)
        verified_hash = await self._still_the_password(user, spellings)
        async with self._uow() as uow:
            if not await uow.users.set_password_hash(user.id, verified_hash, new_hash):
                raise AbortedError("the password changed meanwhile; retry")
            revoked = await uow.sessions.revoke_all_for_user(
                user.id, "password_changed", except_id=session_id
            )
            await uow.audit(
                AuditEntry(
                    "user.password_changed",
                    "user",
                    user.id,
                    {"revoked": str(revoked), "ip": client_ip},
                )
            )
            await uow.commit()
        return revoked
