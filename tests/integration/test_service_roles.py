"""Each service of the shared `vaultpay` database logs in as a role of its own and reaches only
its own tables (and transfer, wallet's columns it reads); the platform's shared tables are the
group role's, which every service's role is a member of and nobody logs in as.

Two worlds: one migrated as the services' `migrate` does it now (each chain granting to its
service's role), and one migrated first the way it was before per-service roles (every chain
granting to the group role) and then upgraded: w0005, t0007 and k0002 move the grants.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest

from vaultpay_common.migrations import PLATFORM_CHAIN, migrate_chain, upgrade_all
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import Provisioned, deprovision, provision, run_sql, unique_suffix
from vaultpay_kyc.entrypoints.cli import KYC_CHAIN
from vaultpay_transfer.entrypoints.cli import TRANSFER_CHAIN, WALLET_CHAIN

CHAINS = [PLATFORM_CHAIN, WALLET_CHAIN, TRANSFER_CHAIN, KYC_CHAIN]
# Before per-service roles: every chain at the revision before its move.
BEFORE = {"platform": "head", "wallet": "w0004", "transfer": "t0006", "kyc": "k0001"}

# (table, privilege) each service's role holds; every other pair of the matrix is denied.
TABLES = {
    "wallets": {"wallet": {"SELECT", "INSERT", "UPDATE"}},
    "wallet_pins": {"wallet": {"SELECT", "INSERT", "UPDATE"}},
    "trusted_ips": {"wallet": {"SELECT", "INSERT", "UPDATE", "DELETE"}},
    "notifications": {"wallet": {"SELECT", "INSERT", "UPDATE"}},
    "system_settings": {"wallet": {"SELECT", "UPDATE"}},
    "ledger_postings": {"transfer": {"SELECT"}},
    "ledger_transactions": {"transfer": {"SELECT"}},
    "wallet_transactions": {"transfer": {"SELECT"}},
    "payouts": {"transfer": {"SELECT"}},
    "kyc_documents": {"kyc": {"SELECT", "INSERT"}},
    "kyc_keys": {"kyc": {"SELECT", "INSERT", "UPDATE", "DELETE"}},
    "kyc_submissions": {"kyc": {"SELECT", "INSERT", "UPDATE"}},
    # The platform's: every service.
    "outbox_events": {
        s: {"SELECT", "INSERT", "UPDATE", "DELETE"} for s in ("wallet", "transfer", "kyc")
    },
    "idempotency_records": {
        s: {"SELECT", "INSERT", "DELETE"} for s in ("wallet", "transfer", "kyc")
    },
    "audit_events": {s: {"SELECT"} for s in ("wallet", "transfer", "kyc")},
}
FUNCTIONS = {
    "transfer_send_money": "transfer",
    "transfer_withdraw_held": "transfer",
    "transfer_top_up": "transfer",
    "wallet_pin_settle_movement": "wallet",
    "wallet_pin_reserve": "wallet",
    "audit_append": "all",
    "transfer_caps": "nobody",  # the money functions call it as the owner
}
# transfer's crossing into wallet's rows: these columns of `wallets`, read only.
TRANSFER_WALLET_COLUMNS = {"id", "status", "currency", "balance"}
SERVICES = ("wallet", "transfer", "kyc")
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")


@contextmanager
def _fresh(infra: Infra) -> Iterator[Provisioned]:
    admin = infra.postgres.admin_dsn
    dbs = provision(admin, suffix=unique_suffix("r"), password=secrets.token_urlsafe(24))
    try:
        yield dbs
    finally:
        deprovision(admin, dbs)


@pytest.fixture(scope="module")
def migrated(infra: Infra) -> Iterator[Provisioned]:
    """Migrated as `make run` does it: each chain granting to its service's role."""
    with _fresh(infra) as dbs:
        upgrade_all(
            CHAINS, dbs.vaultpay_owner_dsn, dbs.vaultpay_app_role, chain_roles=dbs.chain_roles()
        )
        yield dbs


@pytest.fixture(scope="module")
def upgraded(infra: Infra) -> Iterator[Provisioned]:
    """Migrated with one role for everything up to the revisions before the move, then
    upgraded with per-service roles."""
    with _fresh(infra) as dbs:
        for chain in CHAINS:
            revision = BEFORE[chain.name]
            migrate_chain(chain, dbs.vaultpay_owner_dsn, dbs.vaultpay_app_role, revision=revision)
        upgrade_all(
            CHAINS, dbs.vaultpay_owner_dsn, dbs.vaultpay_app_role, chain_roles=dbs.chain_roles()
        )
        yield dbs


def _owner_fetch(dbs: Provisioned, sql: str, *args: Any) -> list[Any]:
    owner = dbs.url(dbs.vaultpay_owner_role, dbs.vaultpay_database, driver="postgresql")

    async def fetch(conn: Any) -> list[Any]:
        return list(await conn.fetch(sql, *args))

    return run_sql(owner, fetch)


def _table_matrix(dbs: Provisioned) -> dict[tuple[str, str, str], bool]:
    rows = _owner_fetch(
        dbs,
        "SELECT r.service, t.name, p.privilege,"
        " has_table_privilege(r.role, t.name, p.privilege) AS held"
        " FROM unnest($1::text[], $2::text[]) AS r(service, role),"
        " unnest($3::text[]) AS t(name), unnest($4::text[]) AS p(privilege)",
        list(SERVICES),
        [dbs.app_role(s) for s in SERVICES],
        list(TABLES),
        list(PRIVILEGES),
    )
    return {(r["service"], r["name"], r["privilege"]): r["held"] for r in rows}


@pytest.fixture(params=["migrated", "upgraded"])
def world(request: pytest.FixtureRequest) -> Provisioned:
    dbs: Provisioned = request.getfixturevalue(request.param)
    return dbs


def test_each_role_holds_its_own_tables_and_the_platforms_only(world: Provisioned) -> None:
    held = _table_matrix(world)
    expected = {
        (service, table, privilege): privilege in TABLES[table].get(service, set())
        for service in SERVICES
        for table in TABLES
        for privilege in PRIVILEGES
    }
    assert {k for k, v in held.items() if v != expected[k]} == set()


def test_functions_are_executable_by_their_service_only(world: Provisioned) -> None:
    rows = _owner_fetch(
        world,
        "SELECT r.service, p.proname, has_function_privilege(r.role, p.oid, 'EXECUTE') AS held"
        " FROM unnest($1::text[], $2::text[]) AS r(service, role), pg_proc AS p"
        " WHERE p.proname = ANY($3::text[])",
        list(SERVICES),
        [world.app_role(s) for s in SERVICES],
        list(FUNCTIONS),
    )
    assert rows
    wrong = [
        (r["service"], r["proname"])
        for r in rows
        if r["held"] != (FUNCTIONS[r["proname"]] in ("all", r["service"]))
    ]
    assert wrong == []


def test_transfer_reads_only_the_wallet_columns_it_needs(world: Provisioned) -> None:
    rows = _owner_fetch(
        world,
        "SELECT a.attname, has_column_privilege($1, 'wallets', a.attname, 'SELECT') AS held"
        " FROM pg_attribute AS a WHERE a.attrelid = 'wallets'::regclass AND a.attnum > 0"
        " AND NOT a.attisdropped",
        world.app_role("transfer"),
    )
    assert {r["attname"] for r in rows if r["held"]} == TRANSFER_WALLET_COLUMNS


def test_the_group_role_cannot_log_in(migrated: Provisioned) -> None:
    group = migrated.url(
        migrated.vaultpay_app_role, migrated.vaultpay_database, driver="postgresql"
    )
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        run_sql(group, lambda conn: conn.fetchval("SELECT 1"))


async def test_kyc_cannot_move_money_or_read_a_pin_hash(migrated: Provisioned) -> None:
    dsn = migrated.app_dsn("kyc").replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM wallet_pins")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE wallets SET status = 'FROZEN'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT count(*) FROM ledger_postings")
        # Its own table, and the platform's, through the group role.
        assert await conn.fetchval("SELECT count(*) FROM kyc_submissions") == 0
        assert await conn.fetchval("SELECT count(*) FROM outbox_events") == 0
    finally:
        await conn.close()


def test_the_move_is_undone_by_the_downgrades(infra: Infra) -> None:
    """Downgrading the three moves gives every grant back to the group role."""
    with _fresh(infra) as dbs:
        roles = dbs.chain_roles()
        upgrade_all(CHAINS, dbs.vaultpay_owner_dsn, dbs.vaultpay_app_role, chain_roles=roles)
        for chain in reversed(CHAINS[1:]):
            migrate_chain(
                chain,
                dbs.vaultpay_owner_dsn,
                roles[chain.name],
                shared_role=dbs.vaultpay_app_role,
                action="downgrade",
                revision=BEFORE[chain.name],
            )
        granted = _owner_fetch(
            dbs,
            "SELECT c.relname AS name FROM pg_class AS c, aclexplode(c.relacl) AS a"
            " WHERE a.grantee = ANY($1::regrole[])"
            " UNION ALL SELECT c.relname FROM pg_attribute AS t"
            " JOIN pg_class AS c ON c.oid = t.attrelid, aclexplode(t.attacl) AS a"
            " WHERE a.grantee = ANY($1::regrole[])"
            " UNION ALL SELECT p.proname FROM pg_proc AS p, aclexplode(p.proacl) AS a"
            " WHERE a.grantee = ANY($1::regrole[])",
            [dbs.app_role(s) for s in SERVICES],
        )
        assert granted == []  # the services' own roles hold nothing of their own now
        policies = _owner_fetch(dbs, "SELECT policyname FROM pg_policies")
        secured = _owner_fetch(
            dbs, "SELECT relrowsecurity FROM pg_class WHERE relname = 'outbox_events'"
        )
        assert (policies, secured[0]["relrowsecurity"]) == ([], False)
        rows = _owner_fetch(
            dbs,
            "SELECT t.name, has_table_privilege($1, t.name, 'SELECT') AS held"
            " FROM unnest($2::text[]) AS t(name)",
            dbs.vaultpay_app_role,
            list(TABLES),
        )
        assert all(r["held"] for r in rows)


def test_a_service_knows_no_other_roles_password(migrated: Provisioned) -> None:
    """Each role's password derives from the provisioning secret: kyc's DSN does not open
    transfer's role (nor the owner's)."""
    kyc_password = migrated.role_password(migrated.app_role("kyc"))
    assert kyc_password is not None
    passwords = {migrated.role_password(r) for r in migrated.member_roles()}
    assert len(passwords) == len(migrated.member_roles())
    for role in (migrated.app_role("transfer"), migrated.vaultpay_owner_role):
        dsn = (
            f"postgresql://{role}:{quote(kyc_password, safe='')}@{migrated.host}:"
            f"{migrated.port}/{migrated.vaultpay_database}"
        )
        with pytest.raises(asyncpg.InvalidPasswordError):
            run_sql(dsn, lambda conn: conn.fetchval("SELECT 1"))
    own = migrated.app_dsn("kyc").replace("postgresql+asyncpg://", "postgresql://")
    assert run_sql(own, lambda conn: conn.fetchval("SELECT current_user")) == (
        migrated.app_role("kyc")
    )


async def test_a_service_sees_and_writes_only_its_own_outbox_events(world: Provisioned) -> None:
    """Row-level security on the shared outbox: kyc can neither read transfer's events nor
    write one as transfer; each service still reads and writes its own."""
    owner = await asyncpg.connect(_plain(world.vaultpay_owner_dsn))
    try:
        for producer in ("transfer", "kyc"):
            await owner.execute(
                "INSERT INTO outbox_events (event_id, producer, topic, payload)"
                " VALUES (gen_random_uuid(), $1, 'test.topic', '{}'::jsonb)",
                producer,
            )
    finally:
        await owner.close()
    kyc = await asyncpg.connect(_plain(world.app_dsn("kyc")))
    transfer = await asyncpg.connect(_plain(world.app_dsn("transfer")))
    try:
        count = "SELECT count(*) FROM outbox_events WHERE topic = 'test.topic' AND producer = $1"
        assert await kyc.fetchval(count, "transfer") == 0
        assert await kyc.fetchval(count, "kyc") >= 1
        assert await transfer.fetchval(count, "transfer") >= 1
        spoof = (
            "INSERT INTO outbox_events (event_id, producer, topic, payload)"
            " VALUES (gen_random_uuid(), 'transfer', 'test.topic', '{}'::jsonb)"
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await kyc.execute(spoof)
        updated = await kyc.execute(
            "UPDATE outbox_events SET status = 'DELIVERED' WHERE producer = 'transfer'"
        )
        assert updated == "UPDATE 0"
    finally:
        await kyc.close()
        await transfer.close()


def _plain(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://")
