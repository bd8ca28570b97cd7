"""`vaultpay-auth`: operator commands for the auth service.

    vaultpay-auth migrate                                  # alembic upgrade head (owner DSN)
    vaultpay-auth create-superadmin --email a@b.c [--full-name N] [--password-stdin]
                                                           # asks twice, or reads stdin's 1st line
        [--reset-existing]                                 # an existing account (a recovery):
                                                           # promoted, this password, reactivated,
                                                           # its sessions ended
    vaultpay-auth rotate-signing-key [--immediate]         # the standby signs once published for
                                                           # AUTH_KEY_PUBLISH_LEAD_SECONDS (or now)
    vaultpay-auth withdraw-signing-key --kid K             # compromised key: out of the JWKS now,
                                                           # the standby signs at once
    vaultpay-auth verify-audit                             # exit 1 if the hash chain is broken,
                                                           # 3 if the database is unreachable

A super_admin is only ever created here, never through the API.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from vaultpay_auth.adapters.passwords import BcryptPasswordHasher
from vaultpay_auth.adapters.repositories import SqlAuthUnitOfWork
from vaultpay_auth.adapters.signing import KeyRing, SigningKey, UnknownSigningKeyError
from vaultpay_auth.domain.model import User
from vaultpay_auth.domain.policies import (
    check_registration,
    guessability_violations,
    normalize_email,
    normalize_password,
)
from vaultpay_auth.settings import AuthSettings
from vaultpay_common.audit import AuditEntry, AuditLog
from vaultpay_common.cli import EXIT_USAGE, ServiceCli
from vaultpay_common.context import Role
from vaultpay_common.db import create_engine
from vaultpay_common.errors import DomainError, ValidationError
from vaultpay_common.migrations import MigrationChain

__all__ = ["main"]

AUTH_CHAIN = MigrationChain("auth", Path(__file__).resolve().parents[2] / "migrations")
cli = ServiceCli("vaultpay-auth", AuthSettings, chains=[AUTH_CHAIN], description=__doc__)
main = cli.main


class _PasswordNotReadError(Exception):
    """The password could not be read: bad input (exit 2), never a failed check (1)."""


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    try:
        first = getpass.getpass("password: ")
        again = getpass.getpass("again: ")
    except EOFError:
        # No terminal (getpass fell back to stdin) and stdin at its end: a script, a pipe.
        raise _PasswordNotReadError(
            "no password was read (no terminal, and stdin ended): pass --password-stdin and "
            "give the password as stdin's first line"
        ) from None
    if again != first:
        raise _PasswordNotReadError("the passwords differ; nothing was changed")
    return first


class AccountExistsError(DomainError):
    """create-superadmin named an existing account without --reset-existing (a typo must not
    hand super_admin, a new password and a reactivation to someone else's account)."""

    reason = "ACCOUNT_EXISTS"


async def create_superadmin(
    settings: AuthSettings,
    email: str,
    full_name: str,
    password: str,
    *,
    reset_existing: bool = False,
) -> None:
    email = normalize_email(email)
    password = normalize_password(password)  # judged and hashed as NFC, as Register's
    check_registration(email, password, full_name)
    weak = guessability_violations(password, email, full_name=full_name)  # one, on the CLI
    if weak:
        raise ValidationError(weak)
    engine = create_engine(
        settings.database_url.get_secret_value(),
        pool_size=1,
        application_name="vaultpay-auth-cli",
        statement_timeout_ms=settings.db_statement_timeout_ms,
    )
    hasher = BcryptPasswordHasher(
        settings.derived_key("password-pepper"), settings.bcrypt_rounds, workers=1
    )
    try:
        password_hash = await hasher.hash(password)
        # Who ran it, as kyc's CLI records its operator.
        operator = f"operator:{getpass.getuser()}"
        details = {"via": "cli"}
        async with SqlAuthUnitOfWork(engine, settings.audit_key) as uow:
            existing = await uow.users.get_by_email(email)
            now = datetime.now(UTC)
            if existing is None:
                user = User(
                    str(uuid.uuid4()),
                    email,
                    full_name,
                    password_hash,
                    Role.SUPER_ADMIN,
                    True,
                    "",
                    now,
                    now,
                )
                await uow.users.add(user)
                action = "user.superadmin_created"
            elif not reset_existing:
                raise AccountExistsError(
                    f"an account {email} exists: nothing was changed; --reset-existing makes it "
                    "a super_admin with this password, reactivates it and ends its sessions "
                    "(a recovery)"
                )
            else:
                # Locked, then changed: a ChangePassword (or a sign-in's rehash) committing
                # between the read and the write made the password's compare-and-set match
                # nothing while the account was still promoted and reported ready, with the
                # holder's password (the recovery of a compromised account, undone). FOR NO
                # KEY UPDATE (`for_update`), as every change of a user: a refresh of the
                # account (KEY SHARE) is not waited for here, only at the sessions' revocation.
                locked = await uow.users.get(existing.id, for_update=True)
                assert locked is not None  # users are never deleted
                details["old_role"] = locked.role.name.lower()
                details["reactivated"] = str(not locked.active).lower()
                details["password_reset"] = "true"  # noqa: S105 - a flag, not a password
                user = locked
                user.role, user.active, user.updated_at = Role.SUPER_ADMIN, True, now
                user.deactivation_reason, user.deactivated_by = "", None
                await uow.users.update(user)
                if not await uow.users.set_password_hash(
                    user.id, locked.password_hash, password_hash
                ):
                    raise RuntimeError("the password could not be set: nothing was changed")
                # A recovery must also throw out whoever held the account's sessions.
                await uow.sessions.revoke_all_for_user(user.id, "superadmin_reset")
                action = "user.superadmin_promoted"
            await uow.audit(AuditEntry(action, "user", user.id, details, actor_id=operator))
            await uow.commit()
        print(f"super_admin {email} ready (user id {user.id})")
    finally:
        hasher.close()
        await engine.dispose()


def _key_ring(settings: AuthSettings) -> tuple[AsyncEngine, KeyRing]:
    engine = create_engine(
        settings.database_url.get_secret_value(),
        pool_size=1,
        application_name="vaultpay-auth-cli",
        statement_timeout_ms=settings.db_statement_timeout_ms,
    )
    window = timedelta(seconds=settings.access_token_ttl_seconds) + timedelta(minutes=5)
    return engine, KeyRing(engine, settings.kek_bytes, verify_window=window)


def _age(key: SigningKey, now: datetime) -> str:
    seconds = int((now - key.published_at).total_seconds())
    return f"published {seconds // 60} min {seconds % 60} s ago"


async def rotate_signing_key(settings: AuthSettings, *, immediate: bool) -> None:
    engine, keys = _key_ring(settings)
    try:
        lead = timedelta(seconds=0 if immediate else settings.key_publish_lead_seconds)
        kid, switch_at = await keys.rotate(lead, audit=AuditLog().append, via="cli")
        promoted = keys.signer_at(switch_at)
        now = datetime.now(UTC)
        print(
            f"signing key {kid} ({_age(promoted, now)}) signs from "
            f"{switch_at:%Y-%m-%d %H:%M:%S} UTC; standby {_kid_of(keys.standby)} published now"
        )
        _warn_if_young(promoted, now, settings)
    finally:
        await engine.dispose()


async def withdraw_signing_key(settings: AuthSettings, kid: str) -> None:
    engine, keys = _key_ring(settings)
    try:
        done = await keys.withdraw(kid, audit=AuditLog().append, via="cli")
    finally:
        await engine.dispose()
    now = datetime.now(UTC)
    print(
        f"signing key {kid} withdrawn: out of the JWKS now; running replicas and the other"
        " services were notified"
    )
    if done.switched:
        print(f"{done.signer.kid} ({_age(done.signer, now)}) signs now")
        _warn_if_young(done.signer, now, settings)
    print(f"standby {_kid_of(done.standby)} published for the next emergency")


def _kid_of(key: SigningKey | None) -> str:
    return key.kid if key is not None else ""


def _warn_if_young(key: SigningKey, now: datetime, settings: AuthSettings) -> None:
    """Gateways cache the JWKS; a key younger than the lead may be unknown to some of them."""
    if now - key.published_at < timedelta(seconds=settings.key_publish_lead_seconds):
        print(
            f"warning: {key.kid} was {_age(key, now)}; a gateway that cached the JWKS before "
            "may refuse its tokens until it refetches the JWKS",
            file=sys.stderr,
        )


@cli.command(
    "create-superadmin",
    help="create or promote a super_admin",
    if_unreachable="running it again is safe (it creates or promotes, in one transaction)",
)
def _create_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--email", required=True)
    parser.add_argument("--full-name", default="VaultPay Super Admin")
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin (no terminal needed); "
        "otherwise it is asked for twice",
    )
    parser.add_argument(
        "--reset-existing",
        action="store_true",
        help="the email may be an existing account's (a recovery): it becomes a super_admin "
        "with this password, is reactivated and its sessions end; without it, an existing "
        "email changes nothing (exit 2)",
    )


@_create_args.run
async def _create(settings: AuthSettings, args: argparse.Namespace) -> int:
    try:
        password = _read_password(args.password_stdin)
    except _PasswordNotReadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    await create_superadmin(
        settings,
        args.email,
        args.full_name.strip(),
        password,
        reset_existing=args.reset_existing,
    )
    return 0


@cli.command(
    "rotate-signing-key", help="promote the standby JWT signing key and publish a new standby"
)
def _rotate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--immediate",
        action="store_true",
        help="switch now, even if the standby was published less than the lead ago",
    )


@_rotate_args.run
async def _rotate(settings: AuthSettings, args: argparse.Namespace) -> int:
    await rotate_signing_key(settings, immediate=args.immediate)
    return 0


@cli.command(
    "withdraw-signing-key",
    help="emergency: stop publishing a (compromised) key now; the standby signs at once",
)
def _withdraw_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kid", required=True)


@_withdraw_args.run
async def _withdraw(settings: AuthSettings, args: argparse.Namespace) -> int:
    try:
        await withdraw_signing_key(settings, args.kid)
    except UnknownSigningKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
