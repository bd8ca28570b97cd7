"""The per-chain roles of `migrate` (vaultpay_common.migrations): a chain_roles mapping must name
every chain a service migrates, and the privilege move is built from checked names only."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaultpay_common.cli import ServiceCli
from vaultpay_common.config import ServiceSettings
from vaultpay_common.migrations import (
    PLATFORM_CHAIN,
    MigrationChain,
    move_privileges_ddl,
    unnamed_chains,
    upgrade_all,
)

WALLET = MigrationChain("wallet", Path("/nonexistent/wallet"), "alembic_version_wallet")
TRANSFER = MigrationChain("transfer", Path("/nonexistent/transfer"), "alembic_version_transfer")
ROLES = {"platform": "vaultpay_app", "wallet": "vaultpay_wallet_app", "transfer": "t_app"}
NOWHERE = "postgresql+asyncpg://nobody@127.0.0.1:1/none"


def test_a_mapping_must_name_every_chain_and_the_platforms() -> None:
    chains = [PLATFORM_CHAIN, WALLET, TRANSFER]
    assert unnamed_chains(chains, ROLES) == []
    assert unnamed_chains(chains, {}) == []  # no mapping: every chain grants to the app role
    assert unnamed_chains(chains, {"platform": "g", "wallets": "w", "transfer": "t"}) == ["wallet"]
    assert unnamed_chains([TRANSFER], {"transfer": "t"}) == ["platform"]


def test_upgrade_all_refuses_an_incomplete_mapping_before_it_connects() -> None:
    with pytest.raises(ValueError, match="no role for: wallet"):
        upgrade_all(
            [PLATFORM_CHAIN, WALLET, TRANSFER],
            NOWHERE,
            "t_app",
            chain_roles={"platform": "g", "transfer": "t_app"},
        )


def test_migrate_names_the_setting_and_the_chains_it_lacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = ServiceSettings(
        database_url=NOWHERE,
        migration_database_url=NOWHERE,
        redis_url="redis://127.0.0.1:1/0",
        key_encryption_key="A" * 43 + "=",
        database_chain_roles={"platform": "g", "transfer": "t_app"},
    )
    cli = ServiceCli("vaultpay-test", lambda: settings, chains=[PLATFORM_CHAIN, WALLET, TRANSFER])

    assert cli.main(["migrate"]) == 2
    assert "DATABASE_CHAIN_ROLES names no role for: wallet" in capsys.readouterr().err


def test_the_move_is_nothing_between_one_role_and_refuses_unsafe_names() -> None:
    assert move_privileges_ddl(tables=["wallets"], functions=[], from_role="a", to_role="a") == []
    (statement,) = move_privileges_ddl(
        tables=["wallets", "wallet_pins"], functions=["f"], from_role="grp", to_role="svc"
    )
    assert "ARRAY['wallets', 'wallet_pins']::text[]" in statement
    assert "'\"grp\"'" in statement and "'svc'" in statement
    for unsafe in ('x"; DROP TABLE wallets; --', "Upper", "a b"):
        with pytest.raises(ValueError, match="unsafe SQL name"):
            move_privileges_ddl(tables=[unsafe], functions=[], from_role="g", to_role="s")
        with pytest.raises(ValueError, match="unsafe SQL name"):
            move_privileges_ddl(tables=[], functions=[], from_role="g", to_role=unsafe)
