"""Idempotency records are kept at least 24 hours, and the database holds every service's role
to it (platform p0005), not only the purge's own guard.

Before p0005 each service's role could DELETE any record of its own service at any age (its
policy, w0007/t0009/k0004, is one policy for every command): a compromised wallet or kyc could
delete a fresh record and a retry of the call would run its effect again (transfer's movements
have the ledger's own request-id guard; wallet's PIN checks and kyc's calls have none). p0005's
restrictive DELETE policy lets a role delete only records older than 24 hours; the purge,
whose cut is at least 24 hours back (48 by default), purges as before; the owner is not bound.

A database migrated as the services' `migrate` does it (each chain granting to its service's
role), and one migrated with one role for every chain (the group role, which every service's
role is a member of).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.integration.databases import fresh_databases
from vaultpay_common.db import create_engine
from vaultpay_common.idempotency import IDEMPOTENCY_RETENTION, purge_expired_idempotency_records
from vaultpay_common.migrations import PLATFORM_CHAIN, migrate_chain, upgrade_all
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import Provisioned, run_sql
from vaultpay_kyc.entrypoints.cli import KYC_CHAIN
from vaultpay_transfer.entrypoints.cli import TRANSFER_CHAIN, WALLET_CHAIN

pytestmark = pytest.mark.integration

CHAINS = [PLATFORM_CHAIN, WALLET_CHAIN, TRANSFER_CHAIN, KYC_CHAIN]
SERVICES = ("wallet", "transfer", "kyc")
# One method of each service (the record's `service` is computed from it).
METHODS = {
    "wallet": "/vaultpay.wallet.v1.WalletInternalService/VerifyTransferPin#reserve",
    "transfer": "/vaultpay.transfer.v1.TransferService/SendMoney",
    "kyc": "/vaultpay.kyc.v1.KycService/SubmitKyc",
}
POLICY = "idempotency_retention"
_INSERT = (
    "INSERT INTO idempotency_records (caller, method, request_id, fingerprint, reply, created_at)"
    " VALUES ($1, $2, $3::uuid, repeat('0', 64), '\\x00', now() - $4::interval)"
)
_AGES = "SELECT extract(epoch FROM now() - created_at)::bigint / 3600 AS hours"


def _plain(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="module")
def own_roles(infra: Infra) -> Iterator[Provisioned]:
    """Migrated as `make run` does it: each chain granting to its service's role."""
    with fresh_databases(infra, "r") as dbs:
        upgrade_all(
            CHAINS, dbs.vaultpay_owner_dsn, dbs.vaultpay_app_role, chain_roles=dbs.chain_roles()
        )
        yield dbs


@pytest.fixture(scope="module")
def one_role(infra: Infra) -> Iterator[Provisioned]:
    """Every chain granting to the group role (the policies add up for it)."""
    with fresh_databases(infra, "r") as dbs:
        upgrade_all(CHAINS, dbs.vaultpay_owner_dsn, dbs.vaultpay_app_role)
        yield dbs


@pytest.fixture(params=["own_roles", "one_role"])
def world(request: pytest.FixtureRequest) -> Provisioned:
    dbs: Provisioned = request.getfixturevalue(request.param)
    return dbs


async def _add(owner: Any, caller: str, service: str, *hours: float) -> None:
    """A record of `service` under `caller` for each age in `hours`, as the owner."""
    for age in hours:
        await owner.execute(
            _INSERT, caller, METHODS[service], str(uuid.uuid4()), timedelta(hours=age)
        )


async def _ages(owner: Any, caller: str) -> list[int]:
    """The ages (whole hours) of `caller`'s records, youngest first."""
    rows = await owner.fetch(
        f"{_AGES} FROM idempotency_records WHERE caller = $1 ORDER BY 1", caller
    )
    return [int(r["hours"]) for r in rows]


class _Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@pytest.mark.parametrize("service", SERVICES)
async def test_a_services_role_deletes_none_of_its_records_younger_than_a_day(
    world: Provisioned, service: str
) -> None:
    """Its own records, which its policy lets it see and delete: a fresh one and one of 23 h
    stay, whatever the DELETE names; one of 25 h goes (the purge's own cut is later still)."""
    caller = f"retention-{uuid.uuid4()}"
    owner = await asyncpg.connect(_plain(world.vaultpay_owner_dsn))
    conn = await asyncpg.connect(_plain(world.app_dsn(service)))
    try:
        await _add(owner, caller, service, 0, 23, 25)
        # It sees all three (reading is not what p0005 changes)...
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM idempotency_records WHERE caller = $1", caller
            )
            == 3
        )
        # ...but a DELETE of the fresh one by its key deletes nothing,
        fresh = await conn.fetchval(
            "SELECT request_id FROM idempotency_records WHERE caller = $1"
            " ORDER BY created_at DESC LIMIT 1",
            caller,
        )
        assert (
            await conn.execute(
                "DELETE FROM idempotency_records WHERE caller = $1 AND request_id = $2",
                caller,
                fresh,
            )
            == "DELETE 0"
        )
        # and a DELETE of every record of the caller takes the one past a day only.
        assert (
            await conn.execute("DELETE FROM idempotency_records WHERE caller = $1", caller)
            == "DELETE 1"
        )
        assert await _ages(owner, caller) == [0, 23]
    finally:
        await conn.close()
        await owner.close()


@pytest.mark.parametrize("service", SERVICES)
async def test_the_purge_still_purges_its_services_expired_records(
    world: Provisioned, service: str
) -> None:
    """As the service runs it, with its role: the default 48 h retention takes the 49 h record,
    the shortest allowed (24 h) then the 30 h one; the 1 h one stays."""
    caller = f"purge-{uuid.uuid4()}"
    owner = await asyncpg.connect(_plain(world.vaultpay_owner_dsn))
    engine = create_engine(world.app_dsn(service), pool_size=1, application_name="retention")
    try:
        await _add(owner, caller, service, 1, 30, 49)
        for retention, left in ((timedelta(hours=48), [1, 30]), (IDEMPOTENCY_RETENTION, [1])):
            deleted = await purge_expired_idempotency_records(
                engine, service, clock=_Clock(), retention=retention, batch_size=1
            )
            assert deleted >= 1, retention  # other tests' records of the service may go too
            assert await _ages(owner, caller) == left, retention
    finally:
        await engine.dispose()
        await owner.close()


async def test_the_owner_is_not_bound(own_roles: Provisioned) -> None:
    """The table's owner (the migrations; no FORCE) deletes a fresh record."""
    caller = f"owner-{uuid.uuid4()}"
    owner = await asyncpg.connect(_plain(own_roles.vaultpay_owner_dsn))
    try:
        await _add(owner, caller, "wallet", 0)
        assert (
            await owner.execute("DELETE FROM idempotency_records WHERE caller = $1", caller)
            == "DELETE 1"
        )
    finally:
        await owner.close()


def _policies(dbs: Provisioned) -> list[tuple[Any, ...]]:
    owner = _plain(dbs.vaultpay_owner_dsn)

    async def fetch(conn: Any) -> list[tuple[Any, ...]]:
        rows = await conn.fetch(
            "SELECT policyname, permissive, cmd, roles::text[] AS roles, qual FROM pg_policies"
            " WHERE tablename = 'idempotency_records' AND policyname = $1",
            POLICY,
        )
        return [tuple(r) for r in rows]

    return list(run_sql(owner, fetch))


def _secured(dbs: Provisioned) -> bool:
    owner = _plain(dbs.vaultpay_owner_dsn)
    return bool(
        run_sql(
            owner,
            lambda conn: conn.fetchval(
                "SELECT relrowsecurity FROM pg_class WHERE relname = 'idempotency_records'"
            ),
        )
    )


def _fresh_delete(dbs: Provisioned, service: str) -> str:
    """What `service`'s role's DELETE of a fresh record of its own answers."""
    caller = f"fresh-{uuid.uuid4()}"

    async def add(conn: Any) -> None:
        await _add(conn, caller, service, 0)

    run_sql(_plain(dbs.vaultpay_owner_dsn), add)
    return str(
        run_sql(
            _plain(dbs.app_dsn(service)),
            lambda conn: conn.execute("DELETE FROM idempotency_records WHERE caller = $1", caller),
        )
    )


def test_p0005_is_one_restrictive_delete_policy_and_its_downgrade_drops_it(
    infra: Infra,
) -> None:
    """One policy for every role (PUBLIC), restrictive (it grants nothing: each service's role
    still reaches only the rows its own permissive policy gives it) and for DELETE only.
    Row-level security still follows the services' policies alone: on with all three, off when
    one service's chain goes down, whatever p0005 did. p0005's downgrade drops the policy, and
    an upgrade puts it back."""
    with fresh_databases(infra, "r") as dbs:
        roles = dbs.chain_roles()
        # The platform chain alone (kyc's `migrate` starts with it): the policy is there,
        # row-level security is not on yet (no service's policy exists).
        migrate_chain(PLATFORM_CHAIN, dbs.vaultpay_owner_dsn, roles["platform"])
        assert _secured(dbs) is False
        assert _policies(dbs) == [
            (
                POLICY,
                "RESTRICTIVE",
                "DELETE",
                ["public"],
                "(created_at < (now() - '24:00:00'::interval))",
            )
        ]
        upgrade_all(CHAINS, dbs.vaultpay_owner_dsn, dbs.vaultpay_app_role, chain_roles=roles)
        assert _secured(dbs) is True
        assert _fresh_delete(dbs, "kyc") == "DELETE 0"
        migrate_chain(
            KYC_CHAIN,
            dbs.vaultpay_owner_dsn,
            roles["kyc"],
            shared_role=roles["platform"],
            action="downgrade",
            revision="k0003",
        )
        assert _secured(dbs) is False
        migrate_chain(
            KYC_CHAIN, dbs.vaultpay_owner_dsn, roles["kyc"], shared_role=roles["platform"]
        )
        assert _secured(dbs) is True

        migrate_chain(
            PLATFORM_CHAIN,
            dbs.vaultpay_owner_dsn,
            roles["platform"],
            action="downgrade",
            revision="p0004",
        )
        assert _policies(dbs) == []
        assert _secured(dbs) is True  # the services' policies are all still there
        assert _fresh_delete(dbs, "kyc") == "DELETE 1"  # as before p0005
        migrate_chain(PLATFORM_CHAIN, dbs.vaultpay_owner_dsn, roles["platform"])
        assert len(_policies(dbs)) == 1
        assert _fresh_delete(dbs, "kyc") == "DELETE 0"
