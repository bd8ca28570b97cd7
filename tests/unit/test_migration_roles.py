"""The per-chain roles of `migrate` (vaultpay_common.migrations): a chain_roles mapping must name
every chain a service migrates, the privilege move is built from checked names only, and with
chain roles each service chain is isolated at every run (vaultpay_common.chain_isolation)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Literal

import pytest

from vaultpay_common import migrations
from vaultpay_common.chain_isolation import (
    SHARED_POLICIES,
    ChainIsolation,
    ColumnGrant,
    reconcile_chain,
)
from vaultpay_common.cli import ServiceCli
from vaultpay_common.config import ServiceSettings
from vaultpay_common.idempotency import sql as idempotency_sql
from vaultpay_common.migrations import (
    PLATFORM_CHAIN,
    MigrationChain,
    migrate_chain,
    move_privileges_ddl,
    unnamed_chains,
    upgrade_all,
)
from vaultpay_common.outbox import sql as outbox_sql
from vaultpay_common.row_security import ISOLATED_SERVICES
from vaultpay_kyc.adapters.isolation import KYC_ISOLATION
from vaultpay_transfer.adapters.isolation import TRANSFER_ISOLATION
from vaultpay_wallet.adapters.isolation import WALLET_ISOLATION

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


# Each service's `migrate` with chain roles reconciles its chains after their upgrade, at every
# run (vaultpay_common.chain_isolation): a database migrated with one role for everything before
# chain roles were set is isolated too (tests/integration/test_chain_roles_reconcile.py).


def test_upgrade_all_isolates_with_chain_roles_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str, dict[str, object]]] = []

    def record(chain: MigrationChain, url: str, app_role: str, **kwargs: object) -> None:
        calls.append((chain.name, app_role, kwargs))

    monkeypatch.setattr(migrations, "migrate_chain", record)
    chains = [PLATFORM_CHAIN, WALLET, TRANSFER]
    upgrade_all(chains, NOWHERE, "one_role")
    assert [(name, role, kw["isolate"]) for name, role, kw in calls] == [
        ("platform", "one_role", False),
        ("wallet", "one_role", False),
        ("transfer", "one_role", False),
    ]
    calls.clear()
    upgrade_all(chains, NOWHERE, "t_app", chain_roles=ROLES)
    assert [(name, role, kw["isolate"], kw["shared_role"]) for name, role, kw in calls] == [
        ("platform", "vaultpay_app", True, "vaultpay_app"),
        ("wallet", "vaultpay_wallet_app", True, "vaultpay_app"),
        ("transfer", "t_app", True, "vaultpay_app"),
    ]


@pytest.mark.parametrize(
    ("action", "revision"), [("downgrade", "base"), ("upgrade", "w0005"), ("downgrade", "head")]
)
def test_isolation_follows_an_upgrade_to_head_only(
    action: Literal["upgrade", "downgrade"], revision: str
) -> None:
    with pytest.raises(ValueError, match="upgrade to head only"):
        migrate_chain(
            WALLET, NOWHERE, "w", shared_role="g", action=action, revision=revision, isolate=True
        )


class _NoDatabase:
    """A connection that must not be used."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the reconcile touched the database ({name})")


def test_one_role_for_everything_reconciles_nothing() -> None:
    said: list[str] = []
    changed = reconcile_chain(
        _NoDatabase(),  # type: ignore[arg-type]
        WALLET_ISOLATION,
        app_role="vaultpay_app",
        shared_role="vaultpay_app",
        say=said.append,
    )
    assert (changed, said) == (0, [])


def test_a_chains_isolation_names_plain_objects_of_a_service_of_the_database() -> None:
    with pytest.raises(ValueError, match="not a service of the shared database"):
        ChainIsolation(service="auth", tables=("users",))
    with pytest.raises(ValueError, match="not a plain name"):
        ChainIsolation(service="wallet", tables=('wallets"; DROP TABLE wallets; --',))
    with pytest.raises(ValueError, match="not a plain name"):
        ChainIsolation(service="wallet", functions=("Upper",))
    with pytest.raises(ValueError, match="not a column privilege"):
        ChainIsolation(service="transfer", column_grants=(ColumnGrant("DELETE", "w", ("id",)),))
    with pytest.raises(ValueError, match="no column"):
        ChainIsolation(service="transfer", column_grants=(ColumnGrant("SELECT", "w", ()),))
    with pytest.raises(ValueError, match="not a plain name"):
        ChainIsolation(
            service="transfer", column_grants=(ColumnGrant("SELECT", "wallets", ("a b",)),)
        )
    with pytest.raises(ValueError, match="not a plain name"):
        reconcile_chain(
            _NoDatabase(),  # type: ignore[arg-type]
            KYC_ISOLATION,
            app_role='x"',
            shared_role="vaultpay_app",
        )


def test_each_service_chain_names_its_own_objects_once() -> None:
    isolations = (WALLET_ISOLATION, TRANSFER_ISOLATION, KYC_ISOLATION)
    assert [i.service for i in isolations] == list(ISOLATED_SERVICES)
    objects = [name for i in isolations for name in (*i.tables, *i.functions)]
    assert len(objects) == len(set(objects))
    # transfer's columns of wallet's tables are wallet's tables.
    crossing = {grant.table for grant in TRANSFER_ISOLATION.column_grants}
    assert crossing <= set(WALLET_ISOLATION.tables)


def test_each_service_chains_env_gives_run_env_its_isolation() -> None:
    services = Path(__file__).resolve().parents[2] / "services"
    for isolation in (WALLET_ISOLATION, TRANSFER_ISOLATION, KYC_ISOLATION):
        env = services / isolation.service / "migrations" / "env.py"
        calls = [
            node
            for node in ast.walk(ast.parse(env.read_text(), str(env)))
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "run_env"
        ]
        assert [[k.arg for k in call.keywords] for call in calls] == [["isolation"]], env
        (keyword,) = calls[0].keywords
        assert getattr(keyword.value, "id", None) == f"{isolation.service.upper()}_ISOLATION"


def test_the_shared_policies_are_the_outboxs_and_the_idempotency_records() -> None:
    assert SHARED_POLICIES == (outbox_sql._POLICIES, idempotency_sql._POLICIES)


def test_a_policy_is_pointed_at_a_role_and_the_switch_follows() -> None:
    outbox, _ = SHARED_POLICIES
    alter, switch = outbox.retarget_ddl("kyc", "vaultpay_kyc_app")
    assert alter == 'ALTER POLICY "outbox_kyc" ON outbox_events TO "vaultpay_kyc_app"'
    assert switch == outbox.add_ddl("kyc", "vaultpay_kyc_app")[-1]
    assert outbox.policy("kyc") == "outbox_kyc"
    with pytest.raises(ValueError, match="not a plain name"):
        outbox.retarget_ddl("kyc", 'x" TO PUBLIC; --')
