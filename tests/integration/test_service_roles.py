"""Each service of the shared `vaultpay` database logs in as a role of its own and reaches only
its own tables (and transfer, wallet's columns it reads); the platform's shared tables are the
group role's, which every service's role is a member of and nobody logs in as.

Three worlds: one migrated as the services' `migrate` does it now (each chain granting to its
service's role); one migrated first the way it was before per-service roles (every chain
granting to the group role) and then upgraded: w0005, t0007 and k0002 move the grants; and one
migrated to the heads with one role for everything and then migrated with per-service roles,
which no revision runs for: `migrate` reconciles each chain at every run
(vaultpay_common.chain_isolation; test_chain_roles_reconcile.py runs the services' commands).

The shared outbox and idempotency records are each service's own row by row: row-level
security lets a service's role reach only its events (w0006, t0008, k0003) and its records
(platform p0003's `service` column, w0007, t0009, k0004).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
from sqlalchemy.dialects import postgresql

from tests.integration.databases import fresh_databases
from tests.integration.transfer.sql_capture import CapturedStatement, prepared_plan_scans
from vaultpay_common.db import create_engine
from vaultpay_common.idempotency import (
    IDEMPOTENCY_RETENTION,
    expired_idempotency_records_delete,
    idempotency_service,
    purge_expired_idempotency_records,
)
from vaultpay_common.migrations import PLATFORM_CHAIN, migrate_chain, upgrade_all
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import Provisioned, run_sql
from vaultpay_kyc.entrypoints import bootstrap as kyc_bootstrap
from vaultpay_kyc.entrypoints.cli import KYC_CHAIN
from vaultpay_transfer.entrypoints import bootstrap as transfer_bootstrap
from vaultpay_transfer.entrypoints.cli import TRANSFER_CHAIN, WALLET_CHAIN
from vaultpay_wallet.entrypoints import bootstrap as wallet_bootstrap

CHAINS = [PLATFORM_CHAIN, WALLET_CHAIN, TRANSFER_CHAIN, KYC_CHAIN]
# Before per-service roles: every chain at the revision before its move.
BEFORE = {"platform": "head", "wallet": "w0004", "transfer": "t0006", "kyc": "k0001"}
# Before the idempotency records were each service's own: the revisions before p0003 and the
# service chains' policies, with the per-service roles and the outbox policies in place.
BEFORE_IDEMPOTENCY_POLICIES = {
    "platform": "p0002",
    "wallet": "w0006",
    "transfer": "t0008",
    "kyc": "k0003",
}

# (table, privilege) each service's role holds; every other pair of the matrix is denied.
TABLES = {
    # UPDATE of the columns wallet changes only (w0008): no table-level UPDATE.
    "wallets": {"wallet": {"SELECT", "INSERT"}},
    "wallet_pins": {"wallet": {"SELECT", "INSERT", "UPDATE"}},
    "trusted_ips": {"wallet": {"SELECT", "INSERT", "UPDATE", "DELETE"}},
    # DELETE for the retention's purge (w0010).
    "notifications": {"wallet": {"SELECT", "INSERT", "UPDATE", "DELETE"}},
    "system_settings": {"wallet": {"SELECT", "UPDATE"}},
    "ledger_postings": {"transfer": {"SELECT"}},
    "ledger_transactions": {"transfer": {"SELECT"}},
    "wallet_transactions": {"transfer": {"SELECT"}},
    "payouts": {"transfer": {"SELECT"}},
    "kyc_documents": {"kyc": {"SELECT", "INSERT"}},
    # UPDATE of the columns kyc changes only (k0007): no table-level UPDATE.
    "kyc_keys": {"kyc": {"SELECT", "INSERT", "DELETE"}},
    "kyc_key_rotations": {"kyc": {"SELECT", "INSERT"}},
    # UPDATE of the columns kyc changes only (k0006): no table-level UPDATE.
    "kyc_submissions": {"kyc": {"SELECT", "INSERT"}},
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
    "transfer_lease_payouts": "transfer",  # created again by t0014, its grant given again
    "transfer_claim_payout_for_bank": "transfer",  # the payout worker's claim (t0014)
    "transfer_hold_lookup": "transfer",  # a held movement's stored answer or its key (t0023)
    "wallet_pin_settle_movement": "wallet",
    "wallet_pin_reserve": "wallet",
    "audit_append": "all",
    "transfer_caps": "nobody",  # the money functions call it as the owner
}
# transfer's crossing into wallet's rows: these columns of `wallets`, read only (user_id since
# t0021: the ledger verifier compares each history row's owner with its wallet's).
TRANSFER_WALLET_COLUMNS = {"id", "status", "currency", "balance", "user_id"}
# and these of `wallet_freezes` (t0022: a WALLET_FROZEN the ledger answers tells the freeze
# that holds the wallet; not its note nor who set it).
TRANSFER_FREEZE_COLUMNS = {"wallet_id", "source", "until"}
# The columns of `wallets` wallet's role may UPDATE (w0008); nobody else may UPDATE any.
WALLET_UPDATE_COLUMNS = {"status", "kyc_tier", "updated_at", "closed_at"}
# The columns of `kyc_submissions` kyc's role may UPDATE (k0006): a decision and a key
# rotation's re-wrap; nobody else may UPDATE any.
KYC_UPDATE_COLUMNS = {
    "status",
    "rejection_reason",
    "granted_tier",
    "reviewer_id",
    "reviewed_at",
    "key_id",
    "wrapped_key",
}
# The columns of the key tables kyc's role may UPDATE (k0007): a key's retirement and a
# rotation's progress; nobody else may UPDATE any.
KYC_KEY_UPDATE_COLUMNS = {
    "kyc_keys": {"state", "retiring_since"},
    "kyc_key_rotations": {"reencrypted_count", "finished_at"},
}
SERVICES = ("wallet", "transfer", "kyc")
PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")


@pytest.fixture(scope="module")
def migrated(infra: Infra) -> Iterator[Provisioned]:
    """Migrated as `make run` does it: each chain granting to its service's role."""
    with fresh_databases(infra, "r") as dbs:
        upgrade_all(
            CHAINS, dbs.vaultpay_owner_dsn, dbs.vaultpay_app_role, chain_roles=dbs.chain_roles()
        )
        yield dbs


@pytest.fixture(scope="module")
def upgraded(infra: Infra) -> Iterator[Provisioned]:
    """Migrated with one role for everything up to the revisions before the move, then
    upgraded with per-service roles."""
    with fresh_databases(infra, "r") as dbs:
        for chain in CHAINS:
            revision = BEFORE[chain.name]
            migrate_chain(chain, dbs.vaultpay_owner_dsn, dbs.vaultpay_app_role, revision=revision)
        upgrade_all(
            CHAINS, dbs.vaultpay_owner_dsn, dbs.vaultpay_app_role, chain_roles=dbs.chain_roles()
        )
        yield dbs


@pytest.fixture(scope="module")
def reconciled(infra: Infra) -> Iterator[Provisioned]:
    """Migrated to the heads with one role for everything, then again with per-service roles:
    the role and policy revisions have run already, and `migrate` moves what they would have."""
    with fresh_databases(infra, "r") as dbs:
        upgrade_all(CHAINS, dbs.vaultpay_owner_dsn, dbs.vaultpay_app_role)
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


@pytest.fixture(params=["migrated", "upgraded", "reconciled"])
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
    freezes = _owner_fetch(
        world,
        "SELECT a.attname, has_column_privilege($1, 'wallet_freezes', a.attname, 'SELECT')"
        " AS held FROM pg_attribute AS a WHERE a.attrelid = 'wallet_freezes'::regclass"
        " AND a.attnum > 0 AND NOT a.attisdropped",
        world.app_role("transfer"),
    )
    assert {r["attname"] for r in freezes if r["held"]} == TRANSFER_FREEZE_COLUMNS


def test_only_wallet_updates_wallets_and_only_the_columns_it_changes(world: Provisioned) -> None:
    rows = _owner_fetch(
        world,
        "SELECT r.service, a.attname,"
        " has_column_privilege(r.role, 'wallets', a.attname, 'UPDATE') AS held"
        " FROM unnest($1::text[], $2::text[]) AS r(service, role), pg_attribute AS a"
        " WHERE a.attrelid = 'wallets'::regclass AND a.attnum > 0 AND NOT a.attisdropped",
        list(SERVICES),
        [world.app_role(s) for s in SERVICES],
    )
    assert {(r["service"], r["attname"]) for r in rows if r["held"]} == {
        ("wallet", column) for column in WALLET_UPDATE_COLUMNS
    }


def test_only_kyc_updates_submissions_and_only_the_columns_it_changes(world: Provisioned) -> None:
    rows = _owner_fetch(
        world,
        "SELECT r.service, a.attname,"
        " has_column_privilege(r.role, 'kyc_submissions', a.attname, 'UPDATE') AS held"
        " FROM unnest($1::text[], $2::text[]) AS r(service, role), pg_attribute AS a"
        " WHERE a.attrelid = 'kyc_submissions'::regclass AND a.attnum > 0"
        " AND NOT a.attisdropped",
        list(SERVICES),
        [world.app_role(s) for s in SERVICES],
    )
    assert {(r["service"], r["attname"]) for r in rows if r["held"]} == {
        ("kyc", column) for column in KYC_UPDATE_COLUMNS
    }


@pytest.mark.parametrize("table", sorted(KYC_KEY_UPDATE_COLUMNS))
def test_only_kyc_updates_its_key_tables_and_only_the_columns_it_changes(
    world: Provisioned, table: str
) -> None:
    """k0001 granted kyc's role UPDATE of every column: it could rename a key (the documents
    wrapped under it unreadable) or rewrite who rotated what (review of 2026-12-05)."""
    rows = _owner_fetch(
        world,
        "SELECT r.service, a.attname,"
        " has_column_privilege(r.role, $3::regclass, a.attname, 'UPDATE') AS held"
        " FROM unnest($1::text[], $2::text[]) AS r(service, role), pg_attribute AS a"
        " WHERE a.attrelid = $3::regclass AND a.attnum > 0 AND NOT a.attisdropped",
        list(SERVICES),
        [world.app_role(s) for s in SERVICES],
        table,
    )
    assert {(r["service"], r["attname"]) for r in rows if r["held"]} == {
        ("kyc", column) for column in KYC_KEY_UPDATE_COLUMNS[table]
    }


# A SECURITY DEFINER function runs as its owner: whoever may EXECUTE it holds what it does.
# PUBLIC holds EXECUTE of a function whose ACL is NULL (PostgreSQL's default) or grants it to
# grantee 0; transfer t0025 revoked it from the close guard's trigger function.
_DEFINERS_PUBLIC_RUNS = (
    "SELECT p.oid::regprocedure::text AS function,"
    " p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) AS a"
    "  WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') AS public"
    " FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace"
    " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.prosecdef"
)


def test_no_security_definer_function_is_executable_by_public(world: Provisioned) -> None:
    rows = _owner_fetch(world, _DEFINERS_PUBLIC_RUNS)
    assert "audit_append(text,text,text,text,text,text,jsonb)" in {r["function"] for r in rows}
    assert len(rows) > 10  # every chain's definers are looked at
    assert sorted(r["function"] for r in rows if r["public"]) == []


# Every function PUBLIC may EXECUTE (PostgreSQL's default for a new function): what it returns.
_PUBLIC_RUNS = (
    "SELECT p.oid::regprocedure::text AS function, p.prorettype::regtype::text AS returns"
    " FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace"
    " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) AS a"
    "  WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'))"
)


def test_public_executes_only_trigger_functions(world: Provisioned) -> None:
    """The functions that keep PostgreSQL's default PUBLIC EXECUTE are trigger functions (the
    append-only guards), which no one can call but a trigger; every function a role calls is
    granted to that role alone. A new helper function left with the default would be callable
    by every role of the cluster: this test names it."""
    rows = _owner_fetch(world, _PUBLIC_RUNS)
    assert "audit_refuse_change()" in {r["function"] for r in rows}
    assert sorted(r["function"] for r in rows if r["returns"] != "trigger") == []


def test_the_group_role_cannot_log_in(migrated: Provisioned) -> None:
    group = migrated.url(
        migrated.vaultpay_app_role, migrated.vaultpay_database, driver="postgresql"
    )
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        run_sql(group, lambda conn: conn.fetchval("SELECT 1"))


async def test_kyc_cannot_move_money_or_read_a_pin_hash(migrated: Provisioned) -> None:
    """kyc is refused wallet's and the ledger's tables, and reads its own and the platform's
    outbox (through the group role), of which row-level security shows it its own events only.
    The module's database is shared: other tests' rows may be there, so the test reads no
    counts it did not make, and adds a transfer event of its own that kyc must not see."""
    owner = await asyncpg.connect(_plain(migrated.vaultpay_owner_dsn))
    try:
        await owner.execute(
            "INSERT INTO outbox_events (event_id, producer, topic, payload)"
            " VALUES (gen_random_uuid(), 'transfer', 'test.kyc_reads', '{}'::jsonb)"
        )
    finally:
        await owner.close()
    conn = await asyncpg.connect(_plain(migrated.app_dsn("kyc")))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT * FROM wallet_pins")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE wallets SET status = 'FROZEN'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch("SELECT count(*) FROM ledger_postings")
        # Its own table, and the platform's, are read without a privilege error.
        await conn.fetch("SELECT id FROM kyc_submissions LIMIT 1")
        producers = await conn.fetch("SELECT DISTINCT producer FROM outbox_events")
        assert {r["producer"] for r in producers} <= {"kyc"}
    finally:
        await conn.close()


def test_the_move_is_undone_by_the_downgrades(infra: Infra) -> None:
    """Downgrading the three moves gives every grant back to the group role."""
    with fresh_databases(infra, "r") as dbs:
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
            # The version tables aside: each chain's role reads its own at every run
            # (vaultpay_common.schema_gate), whatever the revision.
            "SELECT c.relname AS name FROM pg_class AS c, aclexplode(c.relacl) AS a"
            " WHERE a.grantee = ANY($1::regrole[]) AND c.relname NOT LIKE 'alembic_version%'"
            " UNION ALL SELECT c.relname FROM pg_attribute AS t"
            " JOIN pg_class AS c ON c.oid = t.attrelid, aclexplode(t.attacl) AS a"
            " WHERE a.grantee = ANY($1::regrole[])"
            " UNION ALL SELECT p.proname FROM pg_proc AS p, aclexplode(p.proacl) AS a"
            " WHERE a.grantee = ANY($1::regrole[])",
            [dbs.app_role(s) for s in SERVICES],
        )
        assert granted == []  # the services' own roles hold nothing of their own now
        # The platform's retention policy (p0005) stays with the platform chain.
        policies = _owner_fetch(
            dbs, "SELECT policyname FROM pg_policies WHERE policyname <> 'idempotency_retention'"
        )
        secured = _owner_fetch(
            dbs,
            "SELECT relname, relrowsecurity FROM pg_class"
            " WHERE relname IN ('outbox_events', 'idempotency_records') ORDER BY relname",
        )
        assert (policies, [tuple(r) for r in secured]) == (
            [],
            [("idempotency_records", False), ("outbox_events", False)],
        )
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


# Methods each service keys its records under: gRPC methods of its package, wallet's PIN-check
# reservations ("#reserve") and kyc's key-rotation CLI.
RECORD_METHODS = {
    "wallet": (
        "/vaultpay.wallet.v1.WalletService/SetPin",
        "/vaultpay.wallet.v1.WalletInternalService/VerifyTransferPin#reserve",
    ),
    "transfer": ("/vaultpay.transfer.v1.TransferService/SendMoney",),
    "kyc": ("/vaultpay.kyc.v1.KycAdminService/AdminRotateKycKey", "cli:vaultpay-kyc/rotate-key"),
}
_INSERT_RECORD = (
    "INSERT INTO idempotency_records (caller, method, request_id, fingerprint, reply, created_at)"
    " VALUES ($1, $2, $3::uuid, repeat('0', 64), $4, $5)"
)


async def _add_records(conn: Any, caller: str, created_at: datetime) -> None:
    """One record of each method of every service under `caller` (as the owner)."""
    for methods in RECORD_METHODS.values():
        for method in methods:
            await conn.execute(
                _INSERT_RECORD, caller, method, str(uuid.uuid4()), b"a stored answer", created_at
            )


async def _services_of(conn: Any, caller: str) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT service, count(*) AS n FROM idempotency_records WHERE caller = $1 GROUP BY service",
        caller,
    )
    return {r["service"]: r["n"] for r in rows}


def test_every_method_a_service_serves_names_that_service() -> None:
    """The cleanup of each service purges the records of the methods it serves."""
    for module in (wallet_bootstrap, transfer_bootstrap, kyc_bootstrap):
        for service in module.SERVICES:
            for method in service.methods:
                name = f"/{service.full_name}/{method.name}"
                assert idempotency_service(name) == module.IDEMPOTENCY_SERVICE, name
    for service, methods in RECORD_METHODS.items():
        assert {idempotency_service(m) for m in methods} == {service}
    assert idempotency_service("pgbench") is None


async def test_a_service_sees_inserts_and_deletes_only_its_own_idempotency_records(
    world: Provisioned,
) -> None:
    """Row-level security on the shared idempotency records: no service's role reads another's
    stored answers, stores one under its methods or deletes its records. The records are a day
    and an hour old: a younger one no role deletes at all (p0005, test_idempotency_retention)."""
    caller = f"roles-{uuid.uuid4()}"
    past_a_day = datetime.now(UTC) - timedelta(hours=25)
    owner = await asyncpg.connect(_plain(world.vaultpay_owner_dsn))
    try:
        await _add_records(owner, caller, past_a_day)
        stored = await owner.fetch(
            "SELECT method, service FROM idempotency_records WHERE caller = $1", caller
        )
        # PostgreSQL's `service` and idempotency_service agree on every method.
        assert {(r["method"], r["service"]) for r in stored} == {
            (m, s) for s, methods in RECORD_METHODS.items() for m in methods
        }
        for service in SERVICES:
            conn = await asyncpg.connect(_plain(world.app_dsn(service)))
            try:
                seen = await conn.fetch(
                    "SELECT method, reply FROM idempotency_records WHERE caller = $1", caller
                )
                assert {r["method"] for r in seen} == set(RECORD_METHODS[service])
                for other in SERVICES:
                    if other == service:
                        continue
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await conn.execute(
                            _INSERT_RECORD,
                            caller,
                            RECORD_METHODS[other][0],
                            str(uuid.uuid4()),
                            b"spoofed",
                            datetime.now(UTC),
                        )
                # Its own it may still store.
                await conn.execute(
                    _INSERT_RECORD,
                    caller,
                    RECORD_METHODS[service][0],
                    str(uuid.uuid4()),
                    b"its own",
                    past_a_day,
                )
            finally:
                await conn.close()
        kyc = await asyncpg.connect(_plain(world.app_dsn("kyc")))
        try:
            deleted = await kyc.execute("DELETE FROM idempotency_records WHERE caller = $1", caller)
        finally:
            await kyc.close()
        assert deleted == f"DELETE {len(RECORD_METHODS['kyc']) + 1}"
        assert await _services_of(owner, caller) == {
            "wallet": len(RECORD_METHODS["wallet"]) + 1,
            "transfer": len(RECORD_METHODS["transfer"]) + 1,
        }
    finally:
        await owner.close()


_TOP_UP = (
    "SELECT outcome, reply FROM transfer_top_up($1, $2, $3::uuid, $4, $5, $1, $6, 'INR', 'UPI',"
    " $7, 'roles test')"
)
_SEND = (
    "SELECT outcome, reply FROM transfer_send_money($1, $2, $3::uuid, $4, $5, $1, $6, $7, 'INR',"
    " 'roles test')"
)


async def test_transfers_ledger_keeps_only_transfers_idempotency_records(
    world: Provisioned,
) -> None:
    """The money functions run as the table's owner, whom row-level security does not bind:
    through them transfer's role may neither probe a record of wallet's nor store one under
    wallet's or kyc's methods (t0010). Refused as insufficient_privilege, nothing written;
    transfer's own methods still move money."""
    tag = uuid.uuid4().hex[:8]
    alice, bob = f"roles-{tag}-a", f"roles-{tag}-b"
    alice_wallet, bob_wallet = f"VPY-A{tag[:5].upper()}", f"VPY-B{tag[:5].upper()}"
    wallets_probe = str(uuid.uuid4())
    owner = await asyncpg.connect(_plain(world.vaultpay_owner_dsn))
    transfer = await asyncpg.connect(_plain(world.app_dsn("transfer")))
    try:
        await owner.executemany(
            "INSERT INTO wallets (id, user_id, display_name, currency, balance, status, kyc_tier,"
            " created_at, updated_at) VALUES ($1, $2, $1, 'INR', 0, 'ACTIVE', 'FULL', now(),"
            " now())",
            [(alice_wallet, alice), (bob_wallet, bob)],
        )
        # transfer's own TopUp: money moves, the record is transfer's.
        row = await transfer.fetchrow(
            _TOP_UP,
            alice,
            "/vaultpay.transfer.v1.TransferService/TopUp",
            str(uuid.uuid4()),
            "a" * 64,
            secrets.randbits(62),
            5_000,
            f"ref-{tag}",
        )
        assert row["outcome"] == "OK", row
        # A record of wallet's, under alice's key.
        await owner.execute(
            _INSERT_RECORD,
            alice,
            RECORD_METHODS["wallet"][0],
            wallets_probe,
            b'{"wallet": "its own answer"}',
            datetime.now(UTC),
        )

        async def refused(sql: str, *args: Any) -> None:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="not method"):
                await transfer.fetch(sql, *args)

        for method in (*RECORD_METHODS["wallet"], *RECORD_METHODS["kyc"], "pgbench", ""):
            # Probing wallet's key (a REPLAY would hand back its stored answer, a REUSED tell
            # that it exists) and storing a new record under another's method alike.
            for request_id in (wallets_probe, str(uuid.uuid4())):
                await refused(
                    _SEND,
                    alice,
                    method,
                    request_id,
                    "0" * 64,
                    secrets.randbits(62),
                    bob_wallet,
                    100,
                )
                await refused(
                    _TOP_UP,
                    alice,
                    method,
                    request_id,
                    "0" * 64,
                    secrets.randbits(62),
                    100,
                    f"ref-{uuid.uuid4()}",
                )
        # Nothing written: alice's one top-up, wallet's one record, bob untouched.
        stored = await owner.fetch(
            "SELECT method, service FROM idempotency_records WHERE caller = $1 ORDER BY service",
            alice,
        )
        assert [tuple(r) for r in stored] == [
            ("/vaultpay.transfer.v1.TransferService/TopUp", "transfer"),
            (RECORD_METHODS["wallet"][0], "wallet"),
        ]
        balances = await owner.fetch(
            "SELECT user_id, balance FROM wallets WHERE user_id = ANY($1::text[]) ORDER BY 1",
            [alice, bob],
        )
        assert [tuple(r) for r in balances] == [(alice, 5_000), (bob, 0)]
        rows = await owner.fetchval(
            "SELECT count(*) FROM wallet_transactions WHERE user_id = ANY($1::text[])",
            [alice, bob],
        )
        assert rows == 1
        # transfer's own SendMoney still goes through.
        row = await transfer.fetchrow(
            _SEND,
            alice,
            "/vaultpay.transfer.v1.TransferService/SendMoney",
            str(uuid.uuid4()),
            "b" * 64,
            secrets.randbits(62),
            bob_wallet,
            1_200,
        )
        assert row["outcome"] == "OK", row
        assert await owner.fetchval("SELECT balance FROM wallets WHERE user_id = $1", bob) == 1_200
    finally:
        await transfer.close()
        await owner.close()


class _Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)


async def test_each_services_cleanup_purges_only_its_own_expired_records(
    world: Provisioned,
) -> None:
    """The owner's purge of wallet's records (row-level security does not bind the owner: the
    purge's own filter) leaves transfer's and kyc's; transfer's role's then leaves kyc's."""
    caller = f"purge-{uuid.uuid4()}"
    expired = datetime.now(UTC) - IDEMPOTENCY_RETENTION - timedelta(hours=2)
    fresh = f"{caller}-fresh"
    owner = await asyncpg.connect(_plain(world.vaultpay_owner_dsn))
    try:
        await _add_records(owner, caller, expired)
        await _add_records(owner, fresh, datetime.now(UTC))
        remaining = {s: len(m) for s, m in RECORD_METHODS.items()}
        for service, dsn in (
            ("wallet", world.vaultpay_owner_dsn),
            ("transfer", world.app_dsn("transfer")),
            ("kyc", world.app_dsn("kyc")),
        ):
            engine = create_engine(dsn, pool_size=1, application_name="purge-test")
            try:
                await purge_expired_idempotency_records(
                    engine, service, clock=_Clock(), batch_size=1
                )
            finally:
                await engine.dispose()
            del remaining[service]
            assert await _services_of(owner, caller) == remaining, service
        assert await _services_of(owner, fresh) == {s: len(m) for s, m in RECORD_METHODS.items()}
    finally:
        await owner.close()


async def test_the_purge_reads_its_services_range_of_the_index(migrated: Provisioned) -> None:
    """A day and an hour of records of three services (the last hour's due): a batch of the
    purge is a range of `(service, created_at)` and a TID scan, never a scan of the table
    (matching the victims by primary key, the planner hash-joined a scan of all the rows)."""
    stamp = datetime.now(UTC)
    owner = await asyncpg.connect(_plain(migrated.vaultpay_owner_dsn))
    try:
        await owner.execute(
            "INSERT INTO idempotency_records (caller, method, request_id, fingerprint, reply,"
            " created_at)"
            " SELECT 'explain', (ARRAY['/vaultpay.wallet.v1.WalletService/SetPin',"
            " '/vaultpay.transfer.v1.TransferService/SendMoney',"
            " '/vaultpay.kyc.v1.KycService/SubmitKyc'])[1 + i % 3], gen_random_uuid(),"
            " repeat('0', 64), '\\x00', $1::timestamptz - i * interval '3 seconds'"
            " FROM generate_series(1, 30000) AS i",
            stamp,
        )
        await owner.execute("ANALYZE idempotency_records")
    finally:
        await owner.close()
    cut = stamp - IDEMPOTENCY_RETENTION - timedelta(seconds=1)
    statement = expired_idempotency_records_delete("transfer", cut, batch_size=5_000)
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    transfer = await asyncpg.connect(_plain(migrated.app_dsn("transfer")))
    try:
        plan = json.loads(await transfer.fetchval(f"EXPLAIN (FORMAT JSON) {sql}"))
        deleted = await transfer.execute(sql)
    finally:
        await transfer.close()
    nodes = list(_plan_nodes(plan[0]["Plan"]))
    assert "Seq Scan" not in {n["Node Type"] for n in nodes}, plan
    assert "Tid Scan" in {n["Node Type"] for n in nodes}, plan
    assert "idempotency_records_service_created_idx" in {n.get("Index Name") for n in nodes}
    assert deleted == "DELETE 400"  # the hour past the day, one method in three

    # As the service sends it (asyncpg prepares it): its generic plan too, which cannot see
    # the service, the cut or the batch size (review of 2026-12-04).
    engine = create_engine(migrated.app_dsn("transfer"), pool_size=1, application_name="purge")
    try:
        with CapturedStatement(engine) as captured:
            await purge_expired_idempotency_records(engine, "transfer", clock=_Clock())
    finally:
        await engine.dispose()
    plans = await prepared_plan_scans(_plain(migrated.app_dsn("transfer")), "purge", captured)
    for mode, scans in plans.items():
        assert ("Tid Scan", "idempotency_records") in scans, (mode, scans)
        assert "Seq Scan" not in {kind for kind, _ in scans}, (mode, scans)
        assert "idempotency_records_service_created_idx" in {i for _, i in scans}, (mode, scans)


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


def test_records_stored_before_p0003_belong_to_their_service_after_it(infra: Infra) -> None:
    """A database at the previous heads (per-service roles, outbox policies) with records of
    every service: the upgrade gives each record its service and each role only its own."""
    with fresh_databases(infra, "r") as dbs:
        roles = dbs.chain_roles()
        for chain in CHAINS:
            migrate_chain(
                chain,
                dbs.vaultpay_owner_dsn,
                roles[chain.name],
                shared_role=roles["platform"],
                revision=BEFORE_IDEMPOTENCY_POLICIES[chain.name],
            )
        caller = "before-p0003"

        async def add(conn: Any) -> None:
            await _add_records(conn, caller, datetime.now(UTC))

        owner = dbs.url(dbs.vaultpay_owner_role, dbs.vaultpay_database, driver="postgresql")
        run_sql(owner, add)
        # Before: every role reads every service's records.
        for service in SERVICES:
            assert run_sql(_plain(dbs.app_dsn(service)), _counter(caller)) == 5
        upgrade_all(CHAINS, dbs.vaultpay_owner_dsn, dbs.vaultpay_app_role, chain_roles=roles)
        assert run_sql(owner, lambda conn: _services_of(conn, caller)) == {
            s: len(m) for s, m in RECORD_METHODS.items()
        }
        for service in SERVICES:
            assert run_sql(_plain(dbs.app_dsn(service)), _counter(caller)) == len(
                RECORD_METHODS[service]
            )


def _counter(caller: str) -> Any:
    async def count(conn: Any) -> int:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM idempotency_records WHERE caller = $1", caller
            )
        )

    return count


def test_the_idempotency_policies_and_p0003_are_undone_by_their_downgrades(infra: Infra) -> None:
    """Downgrading w0007, t0009 and k0004 drops the policies and row-level security (the
    outbox's stay); downgrading p0003 then drops the column and restores the index; upgrading
    again ends as a new database does."""

    retention = "idempotency_records:idempotency_retention"  # the platform's (p0005)

    def state(dbs: Provisioned) -> dict[str, Any]:
        rows = _owner_fetch(
            dbs,
            "SELECT tablename || ':' || policyname AS p FROM pg_policies ORDER BY 1",
        )
        secured = _owner_fetch(
            dbs, "SELECT relrowsecurity FROM pg_class WHERE relname = 'idempotency_records'"
        )
        columns = _owner_fetch(
            dbs,
            "SELECT attname FROM pg_attribute WHERE attrelid = 'idempotency_records'::regclass"
            " AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        )
        indexes = _owner_fetch(
            dbs,
            "SELECT indexname FROM pg_indexes WHERE tablename = 'idempotency_records' ORDER BY 1",
        )
        return {
            "policies": [r["p"] for r in rows],
            "secured": secured[0]["relrowsecurity"],
            "columns": [r["attname"] for r in columns],
            "indexes": [r["indexname"] for r in indexes],
        }

    outbox = [
        "outbox_events:outbox_kyc",
        "outbox_events:outbox_transfer",
        "outbox_events:outbox_wallet",
    ]
    with fresh_databases(infra, "r") as dbs:
        roles = dbs.chain_roles()
        upgrade_all(CHAINS, dbs.vaultpay_owner_dsn, dbs.vaultpay_app_role, chain_roles=roles)
        head = state(dbs)
        assert head["policies"] == sorted(
            [*outbox, retention, *(f"idempotency_records:idempotency_{s}" for s in SERVICES)]
        )
        assert (head["secured"], head["columns"][-1]) == (True, "service")
        assert head["indexes"] == [
            "idempotency_records_pkey",
            "idempotency_records_service_created_idx",
        ]
        # Not FORCEd, and the ledger's SECURITY DEFINER functions run as the table's owner:
        # they write transfer's records unbound by the policies.
        owned = _owner_fetch(
            dbs,
            "SELECT c.relforcerowsecurity, bool_and(p.proowner = c.relowner) AS same_owner"
            " FROM pg_class AS c, pg_proc AS p WHERE c.relname = 'idempotency_records'"
            " AND p.proname LIKE 'transfer\\_%' AND p.prosecdef GROUP BY 1",
        )
        assert [tuple(r) for r in owned] == [(False, True)]
        for chain in reversed(CHAINS):
            migrate_chain(
                chain,
                dbs.vaultpay_owner_dsn,
                roles[chain.name],
                shared_role=roles["platform"],
                action="downgrade",
                revision=BEFORE_IDEMPOTENCY_POLICIES[chain.name],
            )
            if chain.name == "wallet":  # the last service chain: no policy of theirs is left
                assert (state(dbs)["policies"], state(dbs)["secured"]) == (
                    sorted([*outbox, retention]),
                    False,
                )
        down = state(dbs)
        assert down["policies"] == outbox
        assert "service" not in down["columns"]
        assert down["indexes"] == ["idempotency_records_created_idx", "idempotency_records_pkey"]
        upgrade_all(CHAINS, dbs.vaultpay_owner_dsn, dbs.vaultpay_app_role, chain_roles=roles)
        assert state(dbs) == head


def _plain(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://")


def _secured(dbs: Provisioned) -> dict[str, bool]:
    rows = _owner_fetch(
        dbs,
        "SELECT relname, relrowsecurity FROM pg_class"
        " WHERE relname IN ('outbox_events', 'idempotency_records')",
    )
    return {r["relname"]: r["relrowsecurity"] for r in rows}


async def _writes_its_own(dbs: Provisioned, service: str) -> None:
    """`service`'s role stores an idempotency record and an outbox event of its own."""
    conn = await asyncpg.connect(_plain(dbs.app_dsn(service)))
    try:
        await conn.execute(
            _INSERT_RECORD,
            f"user:{uuid.uuid4()}",
            RECORD_METHODS[service][0],
            str(uuid.uuid4()),
            b"reply",
            datetime.now(UTC),
        )
        await conn.execute(
            "INSERT INTO outbox_events (event_id, producer, topic, payload)"
            " VALUES (gen_random_uuid(), $1, 'test.topic', '{}'::jsonb)",
            service,
        )
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "order",
    [("kyc", "wallet", "transfer"), ("transfer", "kyc")],
    ids=["kyc-first", "transfer-first"],
)
def test_row_security_waits_for_every_services_policy(infra: Infra, order: tuple[str, ...]) -> None:
    """Each service migrates only its own chains, in any order (kyc: platform + kyc; transfer:
    platform + wallet + transfer). Row-level security on the shared tables comes on with the
    last service's policy, not the first: before, the services not yet migrated have no policy,
    and would have been refused their own writes (wallet's PIN check, a KYC submission). A
    downgrade of one service's chain turns it off again, for the same reason."""
    chains = {chain.name: chain for chain in CHAINS}
    runs = {
        "kyc": ("platform", "kyc"),
        "wallet": ("platform", "wallet"),
        "transfer": ("platform", "wallet", "transfer"),
    }
    with fresh_databases(infra, "r") as dbs:
        roles = dbs.chain_roles()
        done: set[str] = set()
        for service in order:
            for name in runs[service]:
                migrate_chain(
                    chains[name], dbs.vaultpay_owner_dsn, roles[name], shared_role=roles["platform"]
                )
                done.add(name)
            complete = {"wallet", "transfer", "kyc"} <= done
            assert _secured(dbs) == {
                "outbox_events": complete,
                "idempotency_records": complete,
            }, (service, done)
            for writer in SERVICES:  # every role writes its own, migrated or not yet
                asyncio.run(_writes_its_own(dbs, writer))
        migrate_chain(
            chains["kyc"],
            dbs.vaultpay_owner_dsn,
            roles["kyc"],
            shared_role=roles["platform"],
            action="downgrade",
            revision=BEFORE_IDEMPOTENCY_POLICIES["kyc"],
        )
        assert _secured(dbs) == {"outbox_events": True, "idempotency_records": False}
        for writer in SERVICES:
            asyncio.run(_writes_its_own(dbs, writer))
