"""ListUsers' filters read indexes of their own (auth 0011), on real PostgreSQL with auth's chain
at its head, as auth's own role; and an email prefix finds exactly what LIKE found.

Before 0011 the listing's only index was `users_created_idx` `(created_at, id)`: a staff role
or the deactivated walked it back checking every user until a page was full (the whole table
for a short page), and an email prefix (`LIKE 'prefix%'`, the pattern a bound parameter) used
no index in the generic plan of the prepared statement (what asyncpg runs after its fifth
execution), nor in any plan under a collation other than "C". The table below holds USERS
users of whom a few are staff and a few deactivated; its `email` takes a collation other than
"C", as production's database has (the test cluster's is "C"). Each filter is the statement the
repository sends (captured from the engine), explained in its generic and its custom plan:
its own index, never a walk of `users_created_idx` nor a Seq Scan. An email prefix is planned
for its value only (its transaction says so): a generic plan prices every range alike.
Plan shapes, never timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.integration.transfer.sql_capture import CapturedStatement, prepared_plan_scans
from vaultpay_auth.adapters.repositories import SqlUserRepository
from vaultpay_auth.adapters.tables import users
from vaultpay_auth.domain.model import User
from vaultpay_auth.entrypoints.cli import AUTH_CHAIN
from vaultpay_auth.service_layer.ports import UserFilter
from vaultpay_common.context import Role
from vaultpay_common.db import create_engine
from vaultpay_common.migrations import migrate_chain
from vaultpay_devstack.postgres import Provisioned

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
USERS = 20_000  # user i was created i minutes before NOW: 'user-<i>@example.com'
STAFF_EVERY = 1_000  # user i is staff when i % STAFF_EVERY == 0 (20 of them)...
STAFF_ROLES = ("MODERATOR", "ADMIN", "SUPER_ADMIN")  # ...of the role (i // STAFF_EVERY) % 3
INACTIVE_EVERY = 997  # user i is deactivated when i % INACTIVE_EVERY == 0 (20 of them)
COLLATION = "und-x-icu"  # ICU's root locale: not "C"
INDEXES = {
    "users_staff_created_idx": "(created_at, id) WHERE (role = ANY (ARRAY['MODERATOR'::text,"
    " 'ADMIN'::text, 'SUPER_ADMIN'::text]))",
    "users_inactive_created_idx": "(created_at, id) WHERE (NOT active)",
    "users_email_c_idx": '(email COLLATE "C")',
}
# Emails of the prefix test (created before the USERS): LIKE's wildcards and escape character,
# characters beside the surrogates (U+D7FF, U+E000) and the last code point (U+10FFFF).
ODD_EMAILS = (
    "a%b@odd.test",
    "a_b@odd.test",
    "axb@odd.test",
    "a\\b@odd.test",
    "a\\\\b@odd.test",
    "ab@odd.test",
    "a@odd.test",
    "b@odd.test",
    "é@odd.test",
    "éa@odd.test",
    "f@odd.test",
    "x\ud7fe@odd.test",
    "x\ud7ff@odd.test",
    "x\ud7ffy@odd.test",
    "x\ue000@odd.test",
    "z\U0010fffe@odd.test",
    "z\U0010ffff@odd.test",
    "z\U0010ffff\U0010ffff@odd.test",
    "{@odd.test",
    "\U0010ffff@odd.test",
    "\U0010ffff\U0010ffff@odd.test",
)
PREFIXES = (
    "a%",
    "A_",
    "a\\",
    "a\\\\",
    "a",
    "ab",
    "é",
    "x\ud7ff",
    "x\ud7fe",
    "z\U0010ffff",
    "z\U0010ffff\U0010ffff",
    "z",
    "\U0010ffff",
    "\U0010ffff\U0010ffff",
    "user-1234",
    "user-1",
    "nobody",
)


def _plain(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://")


def _email(i: int) -> str:
    return f"user-{i}@example.com"


@pytest.fixture(scope="module")
async def filled(databases: Provisioned) -> Provisioned:
    """Auth's chain at its head; USERS users and the ODD_EMAILS written as the owner (test data
    only), `email` given a collation other than "C", then ANALYZE."""
    await asyncio.to_thread(
        migrate_chain, AUTH_CHAIN, databases.auth_owner_dsn, databases.auth_app_role
    )
    conn = await asyncpg.connect(_plain(databases.auth_owner_dsn))
    try:
        await conn.execute(f'ALTER TABLE users ALTER COLUMN email TYPE text COLLATE "{COLLATION}"')
        await conn.execute(
            "INSERT INTO users (id, email, password_hash, full_name, role, active, created_at,"
            " updated_at)"
            " SELECT md5('user-' || i)::uuid, 'user-' || i || '@example.com', 'x', 'User',"
            " CASE WHEN i % $3 = 0 THEN ($4::text[])[(i / $3) % 3 + 1] ELSE 'USER' END,"
            " i % $5 <> 0, $1::timestamptz - i * interval '1 minute',"
            " $1::timestamptz - i * interval '1 minute'"
            " FROM generate_series(1, $2) AS i",
            NOW,
            USERS,
            STAFF_EVERY,
            list(STAFF_ROLES),
            INACTIVE_EVERY,
        )
        await conn.executemany(
            "INSERT INTO users (id, email, password_hash, full_name, role, created_at,"
            " updated_at) VALUES (md5($1)::uuid, $1, 'x', 'Odd', 'USER', $2, $2)",
            [(email, NOW - timedelta(days=30, minutes=n)) for n, email in enumerate(ODD_EMAILS)],
        )
        await conn.execute("ANALYZE users")
    finally:
        await conn.close()
    return databases


@pytest.fixture(scope="module")
async def engine(filled: Provisioned) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(filled.auth_app_dsn, pool_size=1, application_name="user-listing")
    try:
        yield engine
    finally:
        await engine.dispose()


@dataclass(frozen=True, slots=True)
class Case:
    flt: UserFilter
    index: str
    expected: Callable[[int], bool]  # which users (by i) the page holds, newest first
    next_page: bool = False  # the page after the first LIMIT of them
    # Planned for its values, never by the generic plan: the listing's transaction says so.
    custom_plans: bool = False


def _staff(role: str) -> Callable[[int], bool]:
    return lambda i: i % STAFF_EVERY == 0 and STAFF_ROLES[(i // STAFF_EVERY) % 3] == role


CASES = {
    "admins": Case(UserFilter(Role.ADMIN, None, ""), "users_staff_created_idx", _staff("ADMIN")),
    "moderators, next page": Case(
        UserFilter(Role.MODERATOR, None, ""),
        "users_staff_created_idx",
        _staff("MODERATOR"),
        next_page=True,
    ),
    "super admins": Case(
        UserFilter(Role.SUPER_ADMIN, None, ""), "users_staff_created_idx", _staff("SUPER_ADMIN")
    ),
    "deactivated": Case(
        UserFilter(None, False, ""),
        "users_inactive_created_idx",
        lambda i: i % INACTIVE_EVERY == 0,
    ),
    "deactivated, next page": Case(
        UserFilter(None, False, ""),
        "users_inactive_created_idx",
        lambda i: i % INACTIVE_EVERY == 0,
        next_page=True,
    ),
    "email prefix": Case(
        UserFilter(None, None, "User-1234"),
        "users_email_c_idx",
        lambda i: str(i).startswith("1234"),
        custom_plans=True,
    ),
    "email prefix, next page": Case(
        UserFilter(None, None, "user-1234"),
        "users_email_c_idx",
        lambda i: str(i).startswith("1234"),
        next_page=True,
        custom_plans=True,
    ),
}
LIMIT = 5


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_each_rare_filter_reads_its_own_index(
    engine: AsyncEngine, filled: Provisioned, case: Case
) -> None:
    wanted = [_email(i) for i in range(1, USERS + 1) if case.expected(i)]
    async with engine.connect() as conn:
        repository = SqlUserRepository(conn)
        after = None
        if case.next_page:
            first = await repository.list(case.flt, None, LIMIT)
            after = (first[-1].created_at, first[-1].id)
            wanted = wanted[LIMIT:]
        with CapturedStatement(engine) as captured:
            page = await repository.list(case.flt, after, LIMIT)
        planned = (await conn.execute(text("SHOW plan_cache_mode"))).scalar_one()
    assert [user.email for user in page] == wanted[:LIMIT]
    plans = await prepared_plan_scans(_plain(filled.auth_app_dsn), "users_page", captured)
    for mode, scans in sorted(plans.items(), reverse=case.custom_plans):
        assert ("Seq Scan", "users") not in scans, (mode, scans)
        if mode == "force_generic_plan" and case.custom_plans:
            continue  # never run, see below
        read = {name for node, name in scans if "Index" in node}
        assert read == {case.index}, (mode, scans)
    # An email prefix is planned for its value: the range of the index for a rare prefix, a
    # walk of users_created_idx for a common one. A generic plan prices every range as 0.5%
    # of the table and would walk for a rare one too.
    assert planned == ("force_custom_plan" if case.custom_plans else "auto")


async def _like(conn: AsyncConnection, prefix: str, limit: int) -> list[str]:
    """What ListUsers returned before 0011: LIKE 'prefix%', its wildcards escaped."""
    escaped = prefix.lower().replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
    query = (
        select(users.c.email)
        .where(users.c.email.like(escaped + "%", escape="\\"))
        .order_by(users.c.created_at.desc(), users.c.id.desc())
        .limit(limit)
    )
    return list((await conn.execute(query)).scalars())


async def test_an_email_prefix_finds_what_like_found(engine: AsyncEngine) -> None:
    """The range holds the emails that start with the prefix, character for character: LIKE's
    wildcards and its escape character are plain characters of the prefix; a prefix ending
    beside the surrogates or at U+10FFFF (whose successor is past its predecessor, or none);
    uppercase in the prefix is lowered. Same rows, same order, a short page and a long one."""
    async with engine.connect() as conn:
        repository = SqlUserRepository(conn)
        found: dict[str, list[User]] = {}
        for prefix in PREFIXES:
            for limit in (3, 100):
                like = await _like(conn, prefix, limit)
                found[prefix] = list(
                    await repository.list(UserFilter(None, None, prefix), None, limit)
                )
                assert [user.email for user in found[prefix]] == like, (prefix, limit)
    assert [u.email for u in found["a%"]] == ["a%b@odd.test"]
    assert [u.email for u in found["A_"]] == ["a_b@odd.test"]
    assert [u.email for u in found["a\\"]] == ["a\\b@odd.test", "a\\\\b@odd.test"]
    assert [u.email for u in found["x\ud7ff"]] == ["x\ud7ff@odd.test", "x\ud7ffy@odd.test"]
    assert len(found["z\U0010ffff"]) == 2 and len(found["\U0010ffff"]) == 2
    assert len(found["user-1"]) == 100 and found["nobody"] == []


async def test_the_downgrade_drops_the_indexes_and_the_upgrade_builds_them(
    filled: Provisioned,
) -> None:
    async def indexes() -> dict[str, str]:
        conn = await asyncpg.connect(_plain(filled.auth_owner_dsn))
        try:
            rows = await conn.fetch(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'users'"
            )
        finally:
            await conn.close()
        return {row["indexname"]: row["indexdef"] for row in rows}

    built = await indexes()
    for name, part in INDEXES.items():
        assert part in built[name], (name, built[name])
    await asyncio.to_thread(
        migrate_chain,
        AUTH_CHAIN,
        filled.auth_owner_dsn,
        filled.auth_app_role,
        action="downgrade",
        revision="0010",
    )
    assert not set(INDEXES) & set(await indexes())
    await asyncio.to_thread(migrate_chain, AUTH_CHAIN, filled.auth_owner_dsn, filled.auth_app_role)
    assert set(INDEXES) <= set(await indexes())
