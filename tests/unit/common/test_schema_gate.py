"""Where a database stands against the code's migrations (vaultpay_common.schema_gate.judge),
and every service's chains as the gate reads them: one head each, known to the code."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import pytest

from vaultpay_auth.entrypoints.cli import cli as auth_cli
from vaultpay_common import schema_gate
from vaultpay_common.cli import ServiceCli
from vaultpay_common.schema_gate import (
    ChainSchema,
    SchemaState,
    code_revisions,
    judge,
    wait_for_schema,
)
from vaultpay_kyc.entrypoints.cli import cli as kyc_cli
from vaultpay_transfer.entrypoints.cli import cli as transfer_cli
from vaultpay_wallet.entrypoints.cli import cli as wallet_cli

CHAIN = ChainSchema(
    "wallet", "alembic_version_wallet", "w0003", frozenset({"w0001", "w0002", "w0003"})
)


@pytest.mark.parametrize(
    ("applied", "state"),
    [
        (["w0003"], SchemaState.CURRENT),
        (["w0002"], SchemaState.BEHIND),
        ([], SchemaState.BEHIND),  # never migrated, or the role may not read the table
        (["w0004"], SchemaState.AHEAD),  # a newer release's revision
    ],
)
def test_a_database_is_judged_against_the_codes_head(
    applied: list[str], state: SchemaState
) -> None:
    assert judge(CHAIN, applied) is state


@pytest.mark.parametrize("cli", [auth_cli, wallet_cli, transfer_cli, kyc_cli])
def test_every_services_chains_have_one_head_the_code_knows(cli: ServiceCli[Any]) -> None:
    for chain in cli.chains:
        schema = code_revisions(chain)
        assert schema.head in schema.revisions
        assert schema.version_table == chain.version_table


def test_the_transfer_server_waits_for_wallets_chain_too() -> None:
    assert [c.name for c in transfer_cli.chains] == ["platform", "wallet", "transfer"]


@pytest.mark.parametrize(
    ("service", "cli"),
    [("auth", auth_cli), ("wallet", wallet_cli), ("transfer", transfer_cli), ("kyc", kyc_cli)],
)
def test_every_server_waits_for_the_chains_its_migrate_runs(
    service: str, cli: ServiceCli[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of the gate: only auth's wiring was proved (by its process test); a server whose
    `main` dropped `schema=` would have served any schema, no test failing."""
    server = importlib.import_module(f"vaultpay_{service}.entrypoints.server")
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(server, "run_service", lambda *args, **kwargs: calls.append(kwargs))
    server.main()
    [call] = calls
    assert list(call["schema"]) == list(cli.chains)


async def test_a_stopped_wait_reports_not_ready_without_connecting() -> None:
    stop = asyncio.Event()
    stop.set()
    assert not await wait_for_schema(
        "postgresql://nobody@127.0.0.1:1/x", wallet_cli.chains, stop=stop
    )


async def test_a_stop_during_the_last_read_wins_over_a_current_schema(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review of the gate: a SIGTERM that came while the read found the schema current was
    ignored, and the process went on to serve until killed."""
    stop = asyncio.Event()

    async def read_then_stopped(dsn: str, schemas: Any, within: float) -> list[Any]:
        stop.set()  # SIGTERM arrives while the read runs
        return [schema_gate._Read(schema, [schema.head], SchemaState.CURRENT) for schema in schemas]

    monkeypatch.setattr(schema_gate, "_read_states", read_then_stopped)
    assert not await wait_for_schema("postgresql://x@127.0.0.1:1/x", wallet_cli.chains, stop=stop)
