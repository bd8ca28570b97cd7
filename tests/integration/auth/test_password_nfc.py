"""One password, whatever the keyboard, through gRPC on a real database and real bcrypt: "\u00e9"
typed precomposed (U+00E9) or decomposed ("e" + U+0301: macOS, some input methods, a paste)
signs in to the same account. Register, ChangePassword and `create-superadmin` hash the NFC
form; a hash made before, of a decomposed password as typed, still signs in and is re-hashed
in NFC by that sign-in."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tests.integration.auth.conftest import PASSWORD, AuthStack, bearer
from vaultpay.auth.v1 import auth_pb2
from vaultpay_auth.adapters.passwords import BcryptPasswordHasher
from vaultpay_auth.settings import AuthSettings
from vaultpay_devstack.postgres import run_sql

PRECOMPOSED = "cr\u00e8me br\u00fbl\u00e9e 42 fa\u00e7ade"
DECOMPOSED = "cre\u0300me bru\u0302le\u0301e 42 fac\u0327ade"


def _email() -> str:
    return f"zoe-{uuid.uuid4().hex[:10]}@example.com"


def _owner_dsn(auth: AuthStack) -> str:
    return auth.dbs.url(auth.dbs.auth_owner_role, auth.dbs.auth_database, driver="postgresql")


def _stored_hash(auth: AuthStack, email: str) -> str:
    async def read(conn: Any) -> str:
        return str(await conn.fetchval("SELECT password_hash FROM users WHERE email = $1", email))

    return str(run_sql(_owner_dsn(auth), read))


async def test_registered_decomposed_signs_in_precomposed(auth: AuthStack) -> None:
    email = _email()
    await auth.register(email, DECOMPOSED)
    assert (await auth.login(email, PRECOMPOSED)).access_token
    assert (await auth.login(email, DECOMPOSED)).access_token


async def test_a_new_password_set_decomposed_signs_in_precomposed(auth: AuthStack) -> None:
    email = _email()
    await auth.register(email, PRECOMPOSED)
    tokens = await auth.login(email, DECOMPOSED)
    new_decomposed = "nai\u0308ve pin\u0303ata 77 re\u0301sume\u0301"
    await auth.public.ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password=DECOMPOSED, new_password=new_decomposed),
        metadata=bearer(tokens),
    )
    assert (await auth.login(email, "na\u00efve pi\u00f1ata 77 r\u00e9sum\u00e9")).access_token


async def test_a_super_admin_made_by_the_cli_decomposed_signs_in_precomposed(
    auth: AuthStack,
) -> None:
    email = _email()
    made = await asyncio.to_thread(
        auth.cli, "create-superadmin", "--email", email, "--password-stdin", stdin=DECOMPOSED + "\n"
    )
    assert made.returncode == 0, made.stderr
    assert (await auth.login(email, PRECOMPOSED)).access_token


async def test_a_hash_made_before_of_the_decomposed_form_signs_in_and_is_rehashed(
    auth: AuthStack,
) -> None:
    email = _email()
    await auth.register(email, PASSWORD)
    settings = AuthSettings(
        database_url=auth.env["AUTH_DATABASE_URL"],
        redis_url=auth.env["AUTH_REDIS_URL"],
        key_encryption_key=auth.env["AUTH_KEY_ENCRYPTION_KEY"],
    )
    hasher = BcryptPasswordHasher(settings.derived_key("password-pepper"), 4, workers=1)
    try:
        legacy = await hasher.hash(DECOMPOSED)  # as auth hashed it before: as typed
    finally:
        hasher.close()

    async def store(conn: Any) -> None:
        await conn.execute("UPDATE users SET password_hash = $1 WHERE email = $2", legacy, email)

    await asyncio.to_thread(run_sql, _owner_dsn(auth), store)
    assert (await auth.login(email, DECOMPOSED)).access_token
    assert _stored_hash(auth, email) != legacy  # re-hashed, in NFC
    assert (await auth.login(email, PRECOMPOSED)).access_token
    assert (await auth.login(email, DECOMPOSED)).access_token
