"""`migrate` with `<SERVICE>_DATABASE_CHAIN_ROLES` set leaves the shared database isolated
whatever it was migrated with before, at every run.

wallet w0005, transfer t0007 and kyc k0002 move a chain's grants from the group role to the
service's role, and w0006/w0007, t0008/t0009 and k0003/k0004 create the service's row-level
policies `TO` its role: once, when they run. A database first migrated to the heads with one
role for everything (chain roles unset) kept every grant on the group role and every policy
naming it when it was migrated again with chain roles: `migrate` reported success, and kyc's
role could still call the money functions and read PIN hashes (through the group), and every
role saw every service's outbox events and stored answers (review). Each service's `migrate`
now reconciles its chains after their upgrade (`vaultpay_common.chain_isolation`).

The reference is a database migrated with chain roles from the start (what `make run` does):
the reconciled one must grant every role exactly what it grants, and have the same policies.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Iterator, Mapping
from contextlib import redirect_stderr, redirect_stdout
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.integration.databases import fresh_databases
from vaultpay_common.cli import ServiceCli
from vaultpay_common.config import ServiceSettings
from vaultpay_common.migrations import PLATFORM_CHAIN, migrate_chain
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import Provisioned, run_sql
from vaultpay_kyc.entrypoints import cli as kyc_cli
from vaultpay_transfer.entrypoints import cli as transfer_cli
from vaultpay_wallet.entrypoints import cli as wallet_cli

pytestmark = pytest.mark.integration

SERVICES = ("wallet", "transfer", "kyc")
# Each service's `migrate`: the chains its command runs (kyc: platform + kyc; wallet: platform +
# wallet; transfer: platform + wallet + transfer).
CLIS: dict[str, ServiceCli[Any]] = {
    "wallet": wallet_cli.cli,
    "transfer": transfer_cli.cli,
    "kyc": kyc_cli.cli,
}
# What a reconciled `migrate` prints: a line per grant set moved or granted, per policy.
RECONCILED = (" moved ", " granted ", " policy ")
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
COLUMN_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "REFERENCES")
# Every privilege each role holds (its own or through the group) on every table, sequence,
# column and function of the schema, the group role's included.
_PRIVILEGES = """
SELECT r.who, 'table' AS kind, c.relname::text AS object, p.privilege
FROM unnest($1::text[], $2::text[]) AS r(who, role),
     pg_class AS c, unnest($3::text[]) AS p(privilege)
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
  AND has_table_privilege(r.role, c.oid, p.privilege)
UNION ALL
SELECT r.who, 'column', c.relname || '.' || a.attname, p.privilege
FROM unnest($1::text[], $2::text[]) AS r(who, role),
     pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid,
     unnest($4::text[]) AS p(privilege)
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
  AND a.attnum > 0 AND NOT a.attisdropped
  AND has_column_privilege(r.role, c.oid, a.attnum, p.privilege)
UNION ALL
SELECT r.who, 'function', f.oid::regprocedure::text, 'EXECUTE'
FROM unnest($1::text[], $2::text[]) AS r(who, role), pg_proc AS f
WHERE f.pronamespace = 'public'::regnamespace AND has_function_privilege(r.role, f.oid, 'EXECUTE')
"""
_POLICIES = """
SELECT tablename::text, policyname::text, roles::text[] AS roles, cmd, permissive, qual,
       with_check
FROM pg_policies WHERE schemaname = 'public'
"""
_SECURED = (
    "SELECT relname::text, relrowsecurity FROM pg_class"
    " WHERE relname IN ('outbox_events', 'idempotency_records')"
)
# Methods each service keys its idempotency records under (platform p0003's `service`).
RECORD_METHODS = {
    "wallet": "/vaultpay.wallet.v1.WalletService/SetPin",
    "transfer": "/vaultpay.transfer.v1.TransferService/SendMoney",
    "kyc": "/vaultpay.kyc.v1.KycService/SubmitKyc",
}


def _migrate(dbs: Provisioned, service: str, chain_roles: Mapping[str, str] | None) -> str:
    """`service`'s `migrate` command, as the owner; what it printed."""
    settings = ServiceSettings(
        database_url=dbs.app_dsn(service),
        migration_database_url=dbs.vaultpay_owner_dsn,
        database_app_role=dbs.vaultpay_app_role,
        database_chain_roles=dict(chain_roles or {}),
        redis_url="redis://127.0.0.1:1/0",  # never used by `migrate`
        key_encryption_key="A" * 43 + "=",
    )
    cli = ServiceCli(f"vaultpay-{service}", lambda: settings, chains=CLIS[service].chains)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["migrate"])
    assert code == 0, err.getvalue()
    return out.getvalue()


def _reconciled_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if any(word in line for word in RECONCILED)]


def _owner_fetch(dbs: Provisioned, sql: str, *args: Any) -> list[Any]:
    owner = dbs.url(dbs.vaultpay_owner_role, dbs.vaultpay_database, driver="postgresql")

    async def fetch(conn: Any) -> list[Any]:
        return list(await conn.fetch(sql, *args))

    return run_sql(owner, fetch)


def _state(dbs: Provisioned) -> dict[str, Any]:
    """Who may do what, and the shared tables' policies, with each role named by what it is
    (`group`, or its service), so that two databases' states compare."""
    who = {dbs.vaultpay_app_role: "group"} | {dbs.app_role(s): s for s in SERVICES}
    privileges = _owner_fetch(
        dbs,
        _PRIVILEGES,
        list(who.values()),
        list(who),
        list(TABLE_PRIVILEGES),
        list(COLUMN_PRIVILEGES),
    )
    policies = _owner_fetch(dbs, _POLICIES)
    secured = _owner_fetch(dbs, _SECURED)
    return {
        "privileges": {tuple(r) for r in privileges},
        "policies": {
            (
                r["tablename"],
                r["policyname"],
                tuple(sorted(who.get(role, role) for role in r["roles"])),
                r["cmd"],
                r["permissive"],
                r["qual"],
                r["with_check"],
            )
            for r in policies
        },
        "secured": {r["relname"]: r["relrowsecurity"] for r in secured},
    }


@pytest.fixture(scope="module")
def reference(infra: Infra) -> Iterator[dict[str, Any]]:
    """The state of a database migrated with chain roles from the start (no reconcile needed),
    by the three services' `migrate` as `make run` runs them."""
    with fresh_databases(infra, "i") as dbs:
        for service in SERVICES:
            _migrate(dbs, service, dbs.chain_roles())
        yield _state(dbs)


def _plain(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://")


async def _each_sees_only_its_own(dbs: Provisioned) -> None:
    """Each service's role reads only its own outbox events and idempotency records."""
    tag = f"reconcile-{uuid.uuid4()}"
    owner = await asyncpg.connect(_plain(dbs.vaultpay_owner_dsn))
    try:
        for service in SERVICES:
            await owner.execute(
                "INSERT INTO outbox_events (event_id, producer, topic, payload)"
                " VALUES (gen_random_uuid(), $1, $2, '{}'::jsonb)",
                service,
                tag,
            )
            await owner.execute(
                "INSERT INTO idempotency_records"
                " (caller, method, request_id, fingerprint, reply, created_at)"
                " VALUES ($1, $2, gen_random_uuid(), repeat('0', 64), '\\x00', $3)",
                tag,
                RECORD_METHODS[service],
                datetime.now(UTC) - timedelta(hours=25),
            )
    finally:
        await owner.close()
    for service in SERVICES:
        conn = await asyncpg.connect(_plain(dbs.app_dsn(service)))
        try:
            events = await conn.fetch("SELECT producer FROM outbox_events WHERE topic = $1", tag)
            records = await conn.fetch(
                "SELECT service FROM idempotency_records WHERE caller = $1", tag
            )
            deleted = await conn.execute("DELETE FROM idempotency_records WHERE caller = $1", tag)
        finally:
            await conn.close()
        assert [r["producer"] for r in events] == [service]
        assert [r["service"] for r in records] == [service]
        assert deleted == "DELETE 1", service


async def _refused(dsn: str, sql: str) -> bool:
    conn = await asyncpg.connect(_plain(dsn))
    try:
        await conn.fetch(sql)
    except asyncpg.InsufficientPrivilegeError:
        return True
    finally:
        await conn.close()
    return False


_SEND_MONEY = (
    "SELECT * FROM transfer_send_money('user:x', '/vaultpay.transfer.v1.TransferService/"
    "SendMoney', gen_random_uuid(), repeat('0', 64), 1, 'w', 'w', 1, 'INR', 'note')"
)


@pytest.mark.parametrize(
    "order",
    [("wallet", "kyc", "transfer"), ("transfer", "kyc", "wallet")],
    ids=["wallet-first", "transfer-first"],
)
def test_chain_roles_set_after_one_role_isolate_each_service(
    infra: Infra,
    reference: dict[str, Any],
    order: tuple[str, ...],
) -> None:
    with fresh_databases(infra, "i") as dbs:
        roles = dbs.chain_roles()
        # One role for everything, to the heads, as before per-service roles.
        for service in order:
            _migrate(dbs, service, None)
        one_role = _state(dbs)
        assert _executes(one_role, "kyc", "transfer_send_money")  # through the group
        # Without chain roles, `migrate` again changes nothing and says nothing of roles.
        for service in order:
            assert _reconciled_lines(_migrate(dbs, service, None)) == []
        assert _state(dbs) == one_role

        said = {service: _migrate(dbs, service, roles) for service in order}
        state = _state(dbs)
        # Every role may do exactly what a database migrated with chain roles from the start
        # lets it, no more (kyc calling the money functions) and no less (transfer reading the
        # columns of `wallets` it needs, whichever service migrated first); same policies.
        assert state["privileges"] - reference["privileges"] == set()
        assert reference["privileges"] - state["privileges"] == set()
        assert state["policies"] == reference["policies"]
        assert state["secured"] == {"outbox_events": True, "idempotency_records": True}

        kyc, wallet = dbs.app_dsn("kyc"), dbs.app_dsn("wallet")
        assert asyncio.run(_refused(kyc, _SEND_MONEY))
        assert asyncio.run(_refused(kyc, "SELECT * FROM wallet_pins"))
        assert asyncio.run(_refused(wallet, "SELECT * FROM kyc_documents"))
        assert asyncio.run(_refused(wallet, "SELECT * FROM ledger_postings"))
        assert asyncio.run(_refused(wallet, _SEND_MONEY))
        asyncio.run(_each_sees_only_its_own(dbs))

        # It said what it changed: the first service to run a chain moved the chain's grants
        # and pointed its service's policies at the service's role.
        printed = [line for out in said.values() for line in _reconciled_lines(out)]
        assert any("wallet_pins" in line and roles["wallet"] in line for line in printed)
        assert any("transfer_send_money(" in line for line in printed)
        assert any("kyc_documents" in line for line in printed)
        for service in SERVICES:
            for policy in (f"outbox_{service}", f"idempotency_{service}"):
                named = [line for line in printed if f'"{policy}"' in line]
                assert any(roles[service] in line for line in named), policy

        # A third run: nothing to reconcile, nothing changes.
        for service in order:
            assert _reconciled_lines(_migrate(dbs, service, roles)) == []
        assert _state(dbs) == state


def test_chain_roles_set_after_one_role_at_a_revision_before_the_narrowing(
    infra: Infra, reference: dict[str, Any]
) -> None:
    """A database migrated with one role to revisions before wallet w0008 and kyc k0006 (the
    group held UPDATE of whole tables), then migrated with chain roles: the revisions narrowed
    UPDATE of the chain's role, which held nothing yet, and the reconcile then moved the
    group's table-level UPDATE to it, undoing them (review of 2026-12-05). The reconcile now
    narrows what it moved: the same privileges as a database migrated with roles from the
    start, and a second run changes nothing."""
    with fresh_databases(infra, "n") as dbs:
        owner, group = dbs.vaultpay_owner_dsn, dbs.vaultpay_app_role
        migrate_chain(PLATFORM_CHAIN, owner, group)
        migrate_chain(wallet_cli.WALLET_CHAIN, owner, group, revision="w0007")
        migrate_chain(kyc_cli.KYC_CHAIN, owner, group, revision="k0005")
        roles = dbs.chain_roles()
        said = [_migrate(dbs, service, roles) for service in SERVICES]
        state = _state(dbs)
        assert state["privileges"] - reference["privileges"] == set()
        assert reference["privileges"] - state["privileges"] == set()
        printed = [line for out in said for line in out.splitlines()]
        for table in ("wallets", "kyc_submissions", "kyc_keys", "kyc_key_rotations"):
            assert any(f"revoked UPDATE of the whole of {table} from" in line for line in printed)
        assert all(_reconciled_lines(_migrate(dbs, service, roles)) == [] for service in SERVICES)
        assert _state(dbs) == state


def _executes(state: dict[str, Any], who: str, function: str) -> bool:
    return any(
        (w, kind, privilege) == (who, "function", "EXECUTE") and name.startswith(f"{function}(")
        for w, kind, name, privilege in state["privileges"]
    )


_OBJECTS = (
    "SELECT relname::text AS name FROM pg_class WHERE relnamespace = 'public'::regnamespace"
    " UNION SELECT proname::text FROM pg_proc WHERE pronamespace = 'public'::regnamespace"
)


def test_each_chains_lists_name_what_it_grants_its_role(infra: Infra) -> None:
    """The objects a chain's reconcile moves (`ChainIsolation` of its env.py) are every object
    the chain grants its service's role: a database migrated with chain roles from the start
    grants each role privileges on those and nothing else of its own (a revision adding a table
    or a function granted to `app_role` must add it to the lists)."""
    from vaultpay_kyc.adapters.isolation import KYC_ISOLATION
    from vaultpay_transfer.adapters.isolation import TRANSFER_ISOLATION
    from vaultpay_wallet.adapters.isolation import WALLET_ISOLATION

    with fresh_databases(infra, "i") as dbs:
        for service in SERVICES:
            _migrate(dbs, service, dbs.chain_roles())
        for isolation in (WALLET_ISOLATION, TRANSFER_ISOLATION, KYC_ISOLATION):
            role = dbs.app_role(isolation.service)
            tables = _owner_fetch(
                dbs,
                "SELECT DISTINCT c.relname::text AS name FROM pg_class AS c,"
                " aclexplode(c.relacl) AS a WHERE a.grantee = $1::regrole",
                role,
            )
            # Besides the chain's objects, its role reads the chain's version table (granted
            # at every run, not moved: vaultpay_common.schema_gate).
            version = f"alembic_version_{isolation.service}"
            assert version in {r["name"] for r in tables}
            tables = [r for r in tables if r["name"] != version]
            columns = _owner_fetch(
                dbs,
                "SELECT c.relname::text AS name, a.privilege_type AS privilege,"
                " array_agg(t.attname::text ORDER BY t.attname) AS columns"
                " FROM pg_attribute AS t JOIN pg_class AS c ON c.oid = t.attrelid,"
                " aclexplode(t.attacl) AS a WHERE a.grantee = $1::regrole GROUP BY 1, 2",
                role,
            )
            functions = _owner_fetch(
                dbs,
                "SELECT DISTINCT p.proname::text AS name FROM pg_proc AS p,"
                " aclexplode(p.proacl) AS a WHERE a.grantee = $1::regrole",
                role,
            )
            present = {r["name"] for r in _owner_fetch(dbs, _OBJECTS)}
            # Every object the role holds is listed; every listed one there is the role's.
            assert {r["name"] for r in tables} == set(isolation.tables) & present
            assert {r["name"] for r in functions} == set(isolation.functions) & present
            crossing = {
                (r["privilege"], r["name"], tuple(r["columns"]))
                for r in columns
                if r["name"] not in isolation.tables
            }
            assert crossing == {
                (grant.privilege, grant.table, tuple(sorted(grant.columns)))
                for grant in isolation.column_grants
            }, isolation.service


_TRANSFERS_COLUMNS = "SELECT id, user_id, status, currency, balance FROM wallets"
_TRANSFERS_FREEZE_COLUMNS = "SELECT wallet_id, source, until FROM wallet_freezes"


def test_transfer_reads_its_columns_of_wallets_whichever_service_reconciles_first(
    infra: Infra,
) -> None:
    """Review of this change: wallet's reconcile moved every grant the group held on
    `wallets`, transfer's columns included, so transfer's role (reading them through the
    group) was refused until transfer's own reconcile, and for good where transfer's role is
    the group's (a staged rollout). The group keeps them until transfer's reconcile takes them."""
    with fresh_databases(infra, "i") as dbs:
        for service in SERVICES:
            _migrate(dbs, service, None)
        transfer = dbs.app_dsn("transfer")
        # Transfer still on the group: wallet's reconcile leaves it its columns.
        staged = dbs.chain_roles() | {"transfer": dbs.vaultpay_app_role}
        _migrate(dbs, "wallet", staged)
        for sql in (_TRANSFERS_COLUMNS, _TRANSFERS_FREEZE_COLUMNS):
            assert not asyncio.run(_refused(transfer, sql)), sql
        assert _reconciled_lines(_migrate(dbs, "wallet", staged)) == []  # nothing left to do
        # Then every service with its own role: transfer's reconcile takes them from the group.
        roles = dbs.chain_roles()
        _migrate(dbs, "wallet", roles)
        for sql in (_TRANSFERS_COLUMNS, _TRANSFERS_FREEZE_COLUMNS):
            assert not asyncio.run(_refused(transfer, sql)), sql
        said = _migrate(dbs, "transfer", roles)
        assert any("revoked SELECT (id, user_id" in line for line in said.splitlines()), said
        group_columns = [
            name
            for who, kind, name, privilege in _state(dbs)["privileges"]
            if (who, kind, privilege) == ("group", "column", "SELECT")
            and name.startswith(("wallets.", "wallet_freezes."))
        ]
        assert group_columns == []
        for sql in (_TRANSFERS_COLUMNS, _TRANSFERS_FREEZE_COLUMNS):
            assert not asyncio.run(_refused(transfer, sql)), sql


def test_a_policy_of_another_role_than_the_group_stops_the_migration(infra: Infra) -> None:
    """Review of this change: two settings naming wallet's role differently (transfer's
    `migrate` runs wallet's chain too) flipped wallet's policies at each run, leaving wallet's
    role without a policy; now the migration stops and says why."""
    with fresh_databases(infra, "i") as dbs:
        roles = dbs.chain_roles()
        for service in SERVICES:
            _migrate(dbs, service, roles)
        wrong = roles | {"wallet": dbs.app_role("kyc")}
        settings = ServiceSettings(
            database_url=dbs.app_dsn("transfer"),
            migration_database_url=dbs.vaultpay_owner_dsn,
            database_app_role=dbs.vaultpay_app_role,
            database_chain_roles=wrong,
            redis_url="redis://127.0.0.1:1/0",
            key_encryption_key="A" * 43 + "=",
        )
        cli = ServiceCli("vaultpay-transfer", lambda: settings, chains=CLIS["transfer"].chains)
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(["migrate"])
        assert code != 0
        assert "DATABASE_CHAIN_ROLES" in err.getvalue() + out.getvalue()
        policies = {
            (r["tablename"], r["policyname"]): list(r["roles"])
            for r in _owner_fetch(dbs, _POLICIES)
        }
        assert policies[("outbox_events", "outbox_wallet")] == [roles["wallet"]]
