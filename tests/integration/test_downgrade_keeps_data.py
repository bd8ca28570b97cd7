"""A downgrade that would drop tables holding rows stops and names them (review of 2026-12-04:
the base downgrades of the ledger, the wallets and the platform dropped their tables whatever
they held); `drop_data=True` drops them. Tables without rows go as before.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from tests.integration.databases import fresh_databases
from vaultpay_common.migrations import PLATFORM_CHAIN, MigrationChain, migrate_chain, upgrade_all
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import Provisioned, run_sql
from vaultpay_kyc.entrypoints.cli import KYC_CHAIN
from vaultpay_transfer.entrypoints.cli import TRANSFER_CHAIN, WALLET_CHAIN

pytestmark = pytest.mark.integration

CHAINS = [PLATFORM_CHAIN, WALLET_CHAIN, TRANSFER_CHAIN]


def _owner_fetch(dbs: Provisioned, sql: str, *args: Any) -> list[Any]:
    owner = dbs.url(dbs.vaultpay_owner_role, dbs.vaultpay_database, driver="postgresql")

    async def fetch(conn: Any) -> list[Any]:
        return list(await conn.fetch(sql, *args))

    return run_sql(owner, fetch)


def _downgrade(dbs: Provisioned, chain: MigrationChain, *, drop_data: bool = False) -> None:
    migrate_chain(
        chain,
        dbs.vaultpay_owner_dsn,
        dbs.vaultpay_app_role,
        action="downgrade",
        revision="base",
        drop_data=drop_data,
    )


def _refused(dbs: Provisioned, chain: MigrationChain) -> str:
    with pytest.raises(DBAPIError) as refused:
        _downgrade(dbs, chain)
    return str(refused.value.orig)


def _tables(dbs: Provisioned) -> set[str]:
    rows = _owner_fetch(dbs, "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
    return {row[0] for row in rows}


def _fund_a_wallet(dbs: Provisioned) -> str:
    """A wallet, topped up through the ledger's function (as its owner): the user id."""
    user_id, wallet_id = str(uuid.uuid4()), f"VPY-{secrets.token_hex(3).upper()}"
    _owner_fetch(
        dbs,
        "INSERT INTO wallets (id, user_id, display_name, currency, balance, status, kyc_tier,"
        " created_at, updated_at) VALUES ($1, $2, 'Kept', 'INR', 0, 'ACTIVE', 'FULL', now(),"
        " now())",
        wallet_id,
        user_id,
    )
    [row] = _owner_fetch(
        dbs,
        "SELECT outcome FROM transfer_top_up($1, $2, $3::uuid, $4, $5, $1, $6, 'INR', 'UPI',"
        " $7, 'downgrade test')",
        user_id,
        "/vaultpay.transfer.v1.TransferService/TopUp",
        str(uuid.uuid4()),
        "b" * 64,
        secrets.randbits(62),
        7_000,
        f"ref-{secrets.token_hex(4)}",
    )
    assert row[0] == "OK", row
    return user_id


def test_empty_tables_downgrade_to_base(infra: Infra) -> None:
    with fresh_databases(infra, "dg") as dbs:
        chains = [*CHAINS, KYC_CHAIN]
        upgrade_all(chains, dbs.vaultpay_owner_dsn, dbs.vaultpay_app_role)
        for chain in reversed(chains):
            _downgrade(dbs, chain)
        left = {"wallets", "ledger_postings", "kyc_submissions", "outbox_events", "audit_events"}
        assert not _tables(dbs) & left


def test_tables_holding_rows_stop_the_downgrade_until_asked_to_drop_them(infra: Infra) -> None:
    with fresh_databases(infra, "dg") as dbs:
        upgrade_all(CHAINS, dbs.vaultpay_owner_dsn, dbs.vaultpay_app_role)
        user_id = _fund_a_wallet(dbs)

        message = _refused(dbs, TRANSFER_CHAIN)
        assert "drops tables that hold rows" in message
        for table in ("ledger_transactions", "ledger_postings", "wallet_transactions"):
            assert table in message
        assert "payouts" not in message.split(": ", 1)[1].split(", ")  # none were made
        # The money is still there: the wallet's side of the top-up and its balance.
        [row] = _owner_fetch(
            dbs,
            "SELECT w.balance, (SELECT count(*) FROM wallet_transactions AS t"
            " WHERE t.user_id = w.user_id) FROM wallets AS w WHERE w.user_id = $1",
            user_id,
        )
        assert tuple(row) == (7_000, 1)

        _downgrade(dbs, TRANSFER_CHAIN, drop_data=True)
        assert "ledger_postings" not in _tables(dbs)

        assert "wallets" in _refused(dbs, WALLET_CHAIN)
        _downgrade(dbs, WALLET_CHAIN, drop_data=True)
        assert "wallets" not in _tables(dbs)

        message = _refused(dbs, PLATFORM_CHAIN)  # the top-up's events and stored answer
        assert "outbox_events" in message and "idempotency_records" in message
        assert {"outbox_events", "idempotency_records"} <= _tables(dbs)
