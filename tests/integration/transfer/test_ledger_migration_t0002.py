"""Migration t0002 (the cheaper money functions) on real PostgreSQL.

* A new database (`vaultpay-transfer migrate`: t0001 then t0002) and one that was at t0001,
  with money in it, before the same command upgraded it end in the same catalogue: functions
  (definitions, owners, grants), tables and their grants, columns, indexes, constraints and
  triggers. Its downgrade gives back exactly what t0001 made, and upgrading again gives back
  the new database's catalogue.
* The functions answer as t0001's did: one scripted history (every outcome of SendMoney,
  TopUp and Withdraw, replays, payouts settled and returned, limit windows and overrides,
  freezes in force, expired or unexplained) run against a database at t0001 and one at head
  gives the same outcomes and replies, the same rows, balances, limit usage, idempotency
  records and outbox events (ids, references and times aside), and transfer_caps the same
  caps for every tier, action and override, a missing default included.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from tests.integration.transfer.conftest import (
    TRANSFER_HEAD,
    plain_dsn,
    run_transfer_cli,
    transfer_env,
)
from vaultpay_common.migrations import PLATFORM_CHAIN, migrate_chain
from vaultpay_devstack.infra import Infra
from vaultpay_devstack.postgres import (
    Provisioned,
    deprovision,
    provision,
    run_sql,
    unique_suffix,
)
from vaultpay_transfer.entrypoints.cli import TRANSFER_CHAIN, WALLET_CHAIN

pytestmark = pytest.mark.integration

SEND = "/vaultpay.transfer.v1.TransferService/SendMoney"
TOP_UP = "/vaultpay.transfer.v1.TransferService/TopUp"
WITHDRAW = "/vaultpay.transfer.v1.TransferService/Withdraw"


def _migrate_to_t0001(dbs: Provisioned) -> None:
    """As a database of t0001's time was migrated: every chain granting to one role (the group
    role here, which the services' roles are members of)."""
    owner, app_role = dbs.vaultpay_owner_dsn, dbs.vaultpay_app_role
    migrate_chain(PLATFORM_CHAIN, owner, app_role)
    migrate_chain(WALLET_CHAIN, owner, app_role, revision="w0004")
    migrate_chain(TRANSFER_CHAIN, owner, app_role, revision="t0001")


def _migrate_with_cli(dbs: Provisioned, redis_url: str) -> None:
    done = run_transfer_cli(transfer_env(dbs, redis_url), "migrate")
    assert done.returncode == 0, done.stdout + done.stderr


@dataclass(frozen=True)
class Worlds:
    new: Provisioned  # `vaultpay-transfer migrate` on an empty database: head
    old: Provisioned  # t0001 only
    upgraded: Provisioned  # t0001 with money in it, then `vaultpay-transfer migrate`
    redis_url: str


@pytest.fixture(scope="module")
def worlds(infra: Infra, redis_url: str) -> Iterator[Worlds]:
    admin = infra.postgres.admin_dsn
    made: list[Provisioned] = []
    try:
        for _ in range(3):
            password = secrets.token_urlsafe(24)
            made.append(provision(admin, suffix=unique_suffix("m"), password=password))
        new, old, upgraded = made
        _migrate_with_cli(new, redis_url)
        _migrate_to_t0001(old)
        _migrate_to_t0001(upgraded)
        yield Worlds(new, old, upgraded, redis_url)
    finally:
        for dbs in made:
            deprovision(admin, dbs)


# -- the catalogue -----------------------------------------------------------------------------

_CATALOGUE = {
    "functions": "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid),"
    " pg_get_userbyid(p.proowner), coalesce(p.proacl::text, '')"
    " FROM pg_proc AS p WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1",
    # A version table's ACL is no revision's: `migrate` grants it at every run, downgrades
    # included (vaultpay_common.schema_gate; tests/integration/test_schema_gate.py).
    "relations": "SELECT c.relname, c.relkind::text, pg_get_userbyid(c.relowner),"
    " CASE WHEN c.relname LIKE 'alembic_version%' THEN '' ELSE coalesce(c.relacl::text, '') END"
    " FROM pg_class AS c"
    " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind <> 'i' ORDER BY 1",
    "columns": "SELECT table_name::text, column_name::text, data_type::text,"
    " coalesce(column_default::text, ''), is_nullable::text FROM information_schema.columns"
    " WHERE table_schema = 'public' ORDER BY 1, ordinal_position",
    "indexes": "SELECT indexname::text, indexdef FROM pg_indexes"
    " WHERE schemaname = 'public' ORDER BY 1",
    "constraints": "SELECT conrelid::regclass::text, conname::text, pg_get_constraintdef(oid)"
    " FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
    "triggers": "SELECT tgrelid::regclass::text, tgname::text, pg_get_triggerdef(oid)"
    " FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2",
    "versions": "SELECT 'transfer', version_num::text FROM alembic_version_transfer",
}


def catalogue(dbs: Provisioned) -> dict[str, list[tuple[str, ...]]]:
    """What the migrations made in `public`, role names made comparable across databases."""

    def plain(value: Any) -> str:
        return (
            str(value)
            .replace(dbs.vaultpay_owner_role, "<owner>")
            .replace(dbs.vaultpay_app_role, "<group>")
            .replace(dbs.app_role("wallet"), "<wallet>")
            .replace(dbs.app_role("transfer"), "<transfer>")
        )

    async def read(conn: Any) -> dict[str, list[tuple[str, ...]]]:
        return {
            name: [tuple(plain(v) for v in row) for row in await conn.fetch(sql)]
            for name, sql in _CATALOGUE.items()
        }

    return run_sql(plain_dsn(dbs.vaultpay_owner_dsn), read)


def _differences(a: dict[str, list[tuple[str, ...]]], b: dict[str, list[tuple[str, ...]]]) -> Any:
    return {
        name: (sorted(set(a[name]) - set(b[name])), sorted(set(b[name]) - set(a[name])))
        for name in a
        if a[name] != b[name]
    }


def _top_up_and_send(dbs: Provisioned, tag: str) -> None:
    """Two wallets, one funded and sending to the other, through the app role."""

    async def work(conn: Any) -> None:
        alice, bob = f"VPY-{tag}AAA0", f"VPY-{tag}BBB0"
        await _owner_wallets(dbs, [(alice, f"u-{tag}-a", "FULL"), (bob, f"u-{tag}-b", "FULL")])
        rid = str(uuid.uuid4())
        row = await conn.fetchrow(
            "SELECT * FROM transfer_top_up($1, $2, $3::uuid, $4, $5, $6, 5000, 'INR', 'UPI', $7,"
            " 'test')",
            f"u-{tag}-a",
            TOP_UP,
            rid,
            "a" * 64,
            secrets.randbits(62),
            f"u-{tag}-a",
            f"ref-{rid}",
        )
        assert row["outcome"] == "OK", row
        row = await conn.fetchrow(
            "SELECT * FROM transfer_send_money($1, $2, gen_random_uuid(), $3, $4, $5, $6, 1200,"
            " 'INR', 'x')",
            f"u-{tag}-a",
            SEND,
            "b" * 64,
            secrets.randbits(62),
            f"u-{tag}-a",
            bob,
        )
        assert row["outcome"] == "OK", row

    run_sql(plain_dsn(dbs.app_dsn("transfer")), work)


async def _owner_wallets(dbs: Provisioned, wallets: list[tuple[str, str, str]]) -> None:
    conn = await asyncpg.connect(plain_dsn(dbs.vaultpay_owner_dsn))
    try:
        await conn.executemany(
            "INSERT INTO wallets (id, user_id, display_name, currency, balance, status, kyc_tier,"
            " created_at, updated_at) VALUES ($1, $2, $1, 'INR', 0, 'ACTIVE', $3, now(), now())",
            wallets,
        )
    finally:
        await conn.close()


def test_a_new_database_and_an_upgraded_one_end_alike_and_the_downgrade_restores_t0001(
    worlds: Worlds,
) -> None:
    new, old, upgraded = worlds.new, worlds.old, worlds.upgraded
    before = catalogue(upgraded)
    assert before == catalogue(old)
    _top_up_and_send(upgraded, "UP")  # money moved by t0001's functions...

    _migrate_with_cli(upgraded, worlds.redis_url)
    after = catalogue(upgraded)
    assert _differences(after, catalogue(new)) == {}
    assert after["versions"] == [("transfer", TRANSFER_HEAD)]
    changed = _differences(before, after)
    # t0003 (after t0002) adds a trigger on wallets and its function; t0004 replaces the lease;
    # t0005 adds the held movements' functions; t0006 replaces the limit check; w0005 and
    # t0007 move the grants from the group role to wallet's and transfer's own; t0010 replaces
    # the idempotency claim and record (transfer's methods only); t0011 adds the payout hold's
    # function and its one column; t0012 replaces the movements' functions (their time taken
    # under the wallet's lock); t0013 replaces the lease again (backing off with attempts);
    # t0014 creates the lease again (returning its end) and replaces the hold's function with
    # the fenced claim; t0015 adds the partial indexes of the rare categories and statuses
    # (built CONCURRENTLY, outside the revision's transaction); t0016 replaces the movements'
    # functions again (a limit's refusal tells its time); t0017 adds the payouts' triggers and
    # their function (a payout changes only along its progress); t0018 adds the partial index
    # of the counted rare-category rows by completion time (GetTransferStats, CONCURRENTLY);
    # t0019 replaces TopUp's function (a reference already credited is answered first); t0020
    # replaces transfer_caps (a missing default fails closed, whatever the user's limit),
    # TopUp's function again (that early answer only for this wallet's own credit) and the
    # payout's settle and return (ALREADY_FINISHED replies the withdrawal's row); t0021 replaces
    # the lease (it counts no attempt) and creates the claim again (it counts the bank call and
    # returns the count); t0024 the partial index of an owner's rows other than COMPLETED P2P
    # sides (CONCURRENTLY); t0025 revokes PUBLIC's EXECUTE of t0003's function; t0026 three
    # CHECKs on wallet_transactions (only a settled row carries a reversed amount, REVERSED is
    # reversed in full, COMPLETED at most in part; validated after their NOT VALID add); w0009
    # adds the indexes of the stale PIN-lock sweep and of wallet's expired-row purge; w0010 the
    # index of the notifications' purge (and its DELETE grant); w0011 a CHECK and a trigger on
    # wallets (a CLOSED wallet holds no money and never opens again) and the trigger's function;
    # t0027 the statistics rollup's two tables (their keys and CHECKs); t0028 the partial
    # indexes of the returned payouts (CONCURRENTLY); w0012 AdminListLimits' three indexes in
    # position order for its filters (`wallet_limit_overrides_recent_idx` stays a release);
    # w0013 the index of RequestPinReset's hourly count (a wallet's tokens by creation).
    assert set(changed) == {
        "columns",
        "constraints",
        "functions",
        "indexes",
        "relations",
        "triggers",
        "versions",
    }, changed
    assert changed["columns"] == (
        [],
        [
            ("payouts", "held_since", "timestamp with time zone", "", "YES"),
            ("transfer_stats_hourly", "currency", "text", "", "NO"),
            ("transfer_stats_hourly", "hour", "timestamp with time zone", "", "NO"),
            ("transfer_stats_hourly", "movements", "bigint", "", "NO"),
            ("transfer_stats_hourly", "volume_minor", "numeric", "", "NO"),
            ("transfer_stats_rollup", "only_row", "boolean", "true", "NO"),
            ("transfer_stats_rollup", "rolled_until", "timestamp with time zone", "", "YES"),
        ],
    )
    assert changed["constraints"] == (
        [],
        [
            (
                "transfer_stats_hourly",
                "transfer_stats_hourly_movements_check",
                "CHECK ((movements > 0))",
            ),
            (
                "transfer_stats_hourly",
                "transfer_stats_hourly_on_the_hour",
                "CHECK ((hour = date_trunc('hour'::text, hour, 'UTC'::text)))",
            ),
            ("transfer_stats_hourly", "transfer_stats_hourly_pkey", "PRIMARY KEY (hour, currency)"),
            (
                "transfer_stats_hourly",
                "transfer_stats_hourly_volume_minor_check",
                "CHECK ((volume_minor > (0)::numeric))",
            ),
            ("transfer_stats_rollup", "transfer_stats_rollup_only_row_check", "CHECK (only_row)"),
            ("transfer_stats_rollup", "transfer_stats_rollup_pkey", "PRIMARY KEY (only_row)"),
            (
                "transfer_stats_rollup",
                "transfer_stats_rollup_rolled_until_check",
                "CHECK (((rolled_until IS NULL)"
                " OR (rolled_until = date_trunc('hour'::text, rolled_until, 'UTC'::text))))",
            ),
            (
                "wallet_transactions",
                "wallet_transactions_completed_reversed_in_part",
                "CHECK (((status <> 'COMPLETED'::text) OR (reversed_amount < amount)))",
            ),
            (
                "wallet_transactions",
                "wallet_transactions_reversed_only_when_settled",
                "CHECK (((reversed_amount = 0)"
                " OR (status = ANY (ARRAY['COMPLETED'::text, 'REVERSED'::text]))))",
            ),
            (
                "wallet_transactions",
                "wallet_transactions_reversed_status_in_full",
                "CHECK (((status <> 'REVERSED'::text) OR (reversed_amount = amount)))",
            ),
            (
                "wallets",
                "wallets_closed_with_zero_balance",
                "CHECK (((status <> 'CLOSED'::text) OR (balance = 0)))",
            ),
        ],
    )
    moved = {name for name, _kind, _owner, acl in changed["relations"][1]}
    assert {"wallets", "wallet_pins", "ledger_postings", "payouts"} <= moved
    assert [name for name, _ in changed["indexes"][0]] == ["wallet_transactions_ledger_idx"]
    assert changed["indexes"][1] == [
        (
            "ip_confirmations_expires_idx",
            "CREATE INDEX ip_confirmations_expires_idx ON public.ip_confirmations"
            " USING btree (expires_at)",
        ),
        (
            "notifications_created_idx",
            "CREATE INDEX notifications_created_idx ON public.notifications"
            " USING btree (created_at)",
        ),
        (
            "pin_reset_tokens_expires_idx",
            "CREATE INDEX pin_reset_tokens_expires_idx ON public.pin_reset_tokens"
            " USING btree (expires_at)",
        ),
        (
            "pin_reset_tokens_wallet_created_idx",
            "CREATE INDEX pin_reset_tokens_wallet_created_idx ON public.pin_reset_tokens"
            " USING btree (wallet_id, created_at)",
        ),
        (
            "transfer_stats_hourly_pkey",
            "CREATE UNIQUE INDEX transfer_stats_hourly_pkey ON public.transfer_stats_hourly"
            " USING btree (hour, currency)",
        ),
        (
            "transfer_stats_rollup_pkey",
            "CREATE UNIQUE INDEX transfer_stats_rollup_pkey ON public.transfer_stats_rollup"
            " USING btree (only_row)",
        ),
        (
            "trusted_ips_expires_idx",
            "CREATE INDEX trusted_ips_expires_idx ON public.trusted_ips USING btree (expires_at)",
        ),
        (
            "wallet_limit_overrides_action_idx",
            "CREATE INDEX wallet_limit_overrides_action_idx ON public.wallet_limit_overrides"
            ' USING btree (action, "position")',
        ),
        (
            "wallet_limit_overrides_source_action_idx",
            "CREATE INDEX wallet_limit_overrides_source_action_idx"
            ' ON public.wallet_limit_overrides USING btree (source, action, "position")',
        ),
        (
            "wallet_limit_overrides_source_idx",
            "CREATE INDEX wallet_limit_overrides_source_idx ON public.wallet_limit_overrides"
            ' USING btree (source, "position")',
        ),
        (
            "wallet_pins_stale_lock_idx",
            "CREATE INDEX wallet_pins_stale_lock_idx ON public.wallet_pins"
            " USING btree (last_attempt_at) WHERE (failed_attempts >= 3)",
        ),
        (
            "wallet_transactions_payout_returns_idx",
            "CREATE INDEX wallet_transactions_payout_returns_idx ON public.wallet_transactions"
            " USING btree (created_at DESC, id DESC)"
            " WHERE ((category = 'WITHDRAW'::text) AND (type = 'CREDIT'::text))",
        ),
        (
            "wallet_transactions_rare_category_idx",
            "CREATE INDEX wallet_transactions_rare_category_idx ON public.wallet_transactions"
            " USING btree (category, created_at DESC, id DESC)"
            " WHERE (category <> ALL (ARRAY['P2P_SEND'::text, 'P2P_RECEIVE'::text]))",
        ),
        (
            "wallet_transactions_rare_completed_idx",
            "CREATE INDEX wallet_transactions_rare_completed_idx ON public.wallet_transactions"
            " USING btree (completed_at)"
            " WHERE ((category <> ALL (ARRAY['P2P_SEND'::text, 'P2P_RECEIVE'::text]))"
            " AND (status = ANY (ARRAY['COMPLETED'::text, 'REVERSED'::text]))"
            " AND ((type = 'DEBIT'::text) OR (category = 'TOP_UP'::text)))",
        ),
        (
            "wallet_transactions_rare_status_idx",
            "CREATE INDEX wallet_transactions_rare_status_idx ON public.wallet_transactions"
            " USING btree (status, created_at DESC, id DESC)"
            " WHERE (status = ANY (ARRAY['FAILED'::text, 'REVERSED'::text]))",
        ),
        (
            "wallet_transactions_user_payout_returns_idx",
            "CREATE INDEX wallet_transactions_user_payout_returns_idx"
            " ON public.wallet_transactions USING btree (user_id, created_at DESC, id DESC)"
            " WHERE ((category = 'WITHDRAW'::text) AND (type = 'CREDIT'::text))",
        ),
        (
            "wallet_transactions_user_rare_idx",
            "CREATE INDEX wallet_transactions_user_rare_idx ON public.wallet_transactions"
            " USING btree (user_id, created_at DESC, id DESC)"
            " WHERE ((category <> ALL (ARRAY['P2P_SEND'::text, 'P2P_RECEIVE'::text]))"
            " OR (status <> 'COMPLETED'::text))",
        ),
    ]
    assert changed["triggers"][0] == []
    assert [t[1] for t in changed["triggers"][1]] == [
        "payouts_change_along_their_progress",
        "payouts_never_deleted",
        "payouts_never_truncated",
        "wallets_close_without_pending_withdrawal",
        "wallets_closed_is_final",
    ]
    _top_up_and_send(upgraded, "U2")  # ...and by t0002's, on the same tables

    for chain, revision in ((TRANSFER_CHAIN, "t0001"), (WALLET_CHAIN, "w0004")):
        migrate_chain(
            chain,
            upgraded.vaultpay_owner_dsn,
            upgraded.app_role(chain.name),
            shared_role=upgraded.vaultpay_app_role,
            action="downgrade",
            revision=revision,
        )
    assert _differences(catalogue(upgraded), before) == {}
    _top_up_and_send(upgraded, "D1")

    _migrate_with_cli(upgraded, worlds.redis_url)
    assert _differences(catalogue(upgraded), catalogue(new)) == {}
    _top_up_and_send(upgraded, "U3")
    verified = run_transfer_cli(transfer_env(upgraded, worlds.redis_url), "verify-ledger")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_no_helper_is_left_in_sql_and_the_app_role_may_still_only_execute(
    worlds: Worlds,
) -> None:
    async def read(conn: Any) -> tuple[list[Any], list[Any]]:
        languages = await conn.fetch(
            "SELECT p.proname::text, l.lanname::text, p.prosecdef, p.proconfig::text"
            " FROM pg_proc AS p JOIN pg_language AS l ON l.oid = p.prolang"
            " WHERE p.pronamespace = 'public'::regnamespace AND p.proname LIKE 'transfer\\_%'"
            " ORDER BY 1"
        )
        writes = await conn.fetch(
            "SELECT table_name::text, privilege_type::text FROM information_schema.table_privileges"
            " WHERE grantee = $1 AND table_name = ANY($2::text[])"
            " AND privilege_type <> 'SELECT'",
            worlds.new.app_role("transfer"),
            [
                "ledger_transactions",
                "ledger_postings",
                "wallet_transactions",
                "top_up_payments",
                "payouts",
                "limit_usage",
            ],
        )
        return list(languages), list(writes)

    languages, writes = run_sql(plain_dsn(worlds.new.vaultpay_owner_dsn), read)
    assert writes == []
    in_sql = {r[0] for r in languages if r[1] == "sql"}
    # The payout worker's lease is one top-level statement, not a helper of another function.
    assert in_sql == {"transfer_lease_payouts"}
    for name, _, _, config in languages:
        assert config is not None and "search_path=pg_catalog" in config, name


# -- the same history against t0001 and head ---------------------------------------------------

_MASKED = {
    "id",
    "ledger_transaction_id",
    "transaction_id",
    "original_transaction_id",
    "reference",
    "created_at",
    "completed_at",
    "available_at",
    "finished_at",
    "event_id",
}


def _mask(value: Any) -> Any:
    """Ids, references and times replaced by whether they are set."""
    if isinstance(value, dict):
        return {
            k: (None if v is None else "<set>") if k in _MASKED else _mask(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value


def _reply(reply: str | None) -> Any:
    return None if reply is None else _mask(json.loads(reply))


class History:
    """Runs the script against one database and records what it answers."""

    def __init__(self, app: Any, owner: Any) -> None:
        self.app, self.owner = app, owner
        self.answers: list[tuple[str, str, Any]] = []
        self.payouts: dict[str, str] = {}

    @staticmethod
    def key(label: str, fingerprint_of: str | None = None) -> tuple[str, str, int]:
        digest = hashlib.sha256(label.encode()).digest()
        request_id = str(uuid.UUID(bytes=digest[:16]))
        fingerprint = hashlib.sha256((fingerprint_of or label).encode()).hexdigest()
        return request_id, fingerprint, int.from_bytes(digest[16:24], "big", signed=True)

    async def record(self, label: str, row: Any) -> tuple[str, Any]:
        outcome, reply = row["outcome"], row["reply"]
        self.answers.append((label, outcome, _reply(reply)))
        return outcome, reply

    async def send(
        self,
        label: str,
        user: str,
        to: str,
        amount: int,
        currency: str = "INR",
        *,
        same_key_as: str | None = None,
        fingerprint_of: str | None = None,
    ) -> str:
        request_id, fingerprint, lock = self.key(same_key_as or label, fingerprint_of)
        row = await self.app.fetchrow(
            "SELECT * FROM transfer_send_money($1, $2, $3::uuid, $4, $5, $6, $7, $8, $9, $10)",
            user,
            SEND,
            request_id,
            fingerprint,
            lock,
            user,
            to,
            amount,
            currency,
            f"note {label}",
        )
        return (await self.record(label, row))[0]

    async def top_up(
        self,
        label: str,
        user: str,
        amount: int,
        currency: str = "INR",
        *,
        payment: str | None = None,
        same_key_as: str | None = None,
        fingerprint_of: str | None = None,
    ) -> str:
        request_id, fingerprint, lock = self.key(same_key_as or label, fingerprint_of)
        row = await self.app.fetchrow(
            "SELECT * FROM transfer_top_up($1, $2, $3::uuid, $4, $5, $6, $7, $8, 'UPI', $9, $10)",
            user,
            TOP_UP,
            request_id,
            fingerprint,
            lock,
            user,
            amount,
            currency,
            payment or f"upi-{label}",
            f"top-up {label}",
        )
        return (await self.record(label, row))[0]

    async def withdraw(self, label: str, user: str, amount: int) -> str:
        request_id, fingerprint, lock = self.key(label)
        row = await self.app.fetchrow(
            "SELECT * FROM transfer_withdraw($1, $2, $3::uuid, $4, $5, $6, $7, 'INR',"
            " 'HDFC0001234', 'XXXX1234', $8, 'Holder')",
            user,
            WITHDRAW,
            request_id,
            fingerprint,
            lock,
            user,
            amount,
            "c" * 64,
        )
        outcome, reply = await self.record(label, row)
        if outcome == "OK":
            self.payouts[label] = json.loads(reply)["id"]
        return outcome

    async def caps(self, label: str, wallet: str, tier: str, action: str) -> None:
        # As the owner, whom the money functions that call it run as.
        row = await self.owner.fetchrow(
            "SELECT * FROM transfer_caps($1, $2, $3)", wallet, tier, action
        )
        self.answers.append((label, "CAPS", (row[0], row[1], row[2])))


_WALLETS = [
    # id, user, tier, currency, status, freeze: None | 'in force' | 'expired'
    ("VPY-ALICE0", "u-alice", "FULL", "INR", "ACTIVE", None),
    ("VPY-BOB000", "u-bob", "FULL", "INR", "ACTIVE", None),
    ("VPY-CAROL0", "u-carol", "BASIC", "INR", "ACTIVE", None),
    ("VPY-DAVE00", "u-dave", "NONE", "INR", "ACTIVE", None),
    ("VPY-ERIN00", "u-erin", "FULL", "INR", "CLOSED", None),
    ("VPY-FRANK0", "u-frank", "FULL", "INR", "FROZEN", "in force"),
    ("VPY-GINA00", "u-gina", "FULL", "INR", "FROZEN", "expired"),
    ("VPY-HANK00", "u-hank", "FULL", "INR", "FROZEN", None),
    ("VPY-IVAN00", "u-ivan", "FULL", "USD", "ACTIVE", None),
    ("VPY-JUDY00", "u-judy", "FULL", "INR", "ACTIVE", None),
    ("VPY-KATE00", "u-kate", "BASIC", "INR", "ACTIVE", None),
]
# (wallet, source, action, per_transaction, daily, monthly)
_OVERRIDES = [
    ("VPY-JUDY00", "ADMIN_OVERRIDE", "send", None, 5_000, None),
    ("VPY-JUDY00", "USER", "send", 3_000, None, None),
    ("VPY-KATE00", "ADMIN_OVERRIDE", "send", None, None, 4_000),
    ("VPY-KATE00", "USER", "withdraw", None, 900, 800),
    ("VPY-CAROL0", "ADMIN_OVERRIDE", "top_up", 2_000_000, 6_000_000, 20_000_000),
    ("VPY-CAROL0", "USER", "top_up", 1_500_000, None, 9_000_000),
]


async def _world(owner: Any) -> None:
    for wallet, user, tier, currency, status, freeze in _WALLETS:
        await owner.execute(
            "INSERT INTO wallets (id, user_id, display_name, currency, balance, status, kyc_tier,"
            " created_at, updated_at, closed_at) VALUES ($1, $2, $3, $4, 0, $5, $6, now(), now(),"
            " CASE WHEN $5 = 'CLOSED' THEN now() END)",
            wallet,
            user,
            f"Name of {user}",
            currency,
            "ACTIVE" if status == "FROZEN" else status,
            tier,
        )
        if freeze is not None:
            await owner.execute(
                "INSERT INTO wallet_freezes (wallet_id, source, note, frozen_at, until, set_by)"
                " VALUES ($1, 'ADMIN', '', now(), CASE WHEN $2 THEN now() - interval '1 hour'"
                " END, 'test')",
                wallet,
                freeze == "expired",
            )
    await owner.executemany(
        "INSERT INTO wallet_limit_overrides (wallet_id, source, action, per_transaction, daily,"
        " monthly, set_by, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'test', now())",
        _OVERRIDES,
    )


async def _freeze(owner: Any) -> None:
    """The FROZEN wallets, after the money they need arrived."""
    frozen = [w[0] for w in _WALLETS if w[4] == "FROZEN"]
    await owner.execute("UPDATE wallets SET status = 'FROZEN' WHERE id = ANY($1::text[])", frozen)


async def _script(h: History) -> None:
    # Money in, and every refusal of TopUp.
    for name in ("alice", "bob", "frank", "gina", "hank", "judy", "kate"):
        assert await h.top_up(f"fund {name}", f"u-{name}", 100_000) == "OK"
    assert await h.top_up("fund carol", "u-carol", 1_500_000) == "OK"
    assert await h.top_up("fund ivan", "u-ivan", 100_000, "USD") == "OK"
    await _freeze(h.owner)
    assert await h.top_up("fund alice", "u-alice", 100_000) == "REPLAY"
    await h.top_up("alice reuses", "u-alice", 1, same_key_as="fund alice", fingerprint_of="other")
    await h.top_up("same payment", "u-bob", 10, payment="upi-fund alice")
    await h.top_up("nobody tops up", "u-nobody", 10)
    await h.top_up("closed tops up", "u-erin", 10)
    await h.top_up("frozen tops up", "u-frank", 10)
    await h.top_up("expired freeze tops up", "u-gina", 10)
    await h.top_up("unexplained freeze tops up", "u-hank", 10)
    await h.top_up("dollars into rupees", "u-ivan", 10)
    await h.top_up("no kyc tops up", "u-dave", 10)
    await h.top_up("carol over her own cap", "u-carol", 1_500_001)
    await h.top_up("carol at her own cap", "u-carol", 1_500_000)
    await h.top_up("carol again", "u-carol", 1_500_000)
    await h.top_up("carol fills her day", "u-carol", 1_500_000)
    await h.top_up("carol over her day", "u-carol", 1)
    await h.top_up("basic over the tier", "u-kate", 1_000_001)
    # SendMoney: success, replay, every refusal.
    assert await h.send("alice pays bob", "u-alice", "VPY-BOB000", 2_500) == "OK"
    await h.send("alice pays bob", "u-alice", "VPY-BOB000", 2_500)
    await h.send(
        "reuse", "u-alice", "VPY-BOB000", 2_500, same_key_as="alice pays bob", fingerprint_of="x"
    )
    await h.send("request of a top-up", "u-alice", "VPY-BOB000", 1, same_key_as="fund alice")
    await h.send("nobody sends", "u-nobody", "VPY-BOB000", 1)
    await h.send("to herself", "u-alice", "VPY-ALICE0", 1)
    await h.send("to nobody", "u-alice", "VPY-ZZZZZZ", 1)
    await h.send("closed sends", "u-erin", "VPY-BOB000", 1)
    await h.send("to a closed wallet", "u-alice", "VPY-ERIN00", 1)
    await h.send("to a frozen wallet", "u-alice", "VPY-FRANK0", 1)
    await h.send("frozen sends", "u-frank", "VPY-BOB000", 1)
    await h.send("expired freeze sends", "u-gina", "VPY-BOB000", 7)
    await h.send("unexplained freeze sends", "u-hank", "VPY-BOB000", 1)
    await h.send("dollars", "u-alice", "VPY-BOB000", 1, "USD")
    await h.send("to dollars", "u-alice", "VPY-IVAN00", 1)
    await h.send("no kyc sends", "u-dave", "VPY-BOB000", 1)
    await h.send("more than she has", "u-bob", "VPY-ALICE0", 1_000_000)
    await h.send("judy over her own cap", "u-judy", "VPY-ALICE0", 3_001)
    await h.send("judy at her own cap", "u-judy", "VPY-ALICE0", 3_000)
    await h.send("judy over the admin's day", "u-judy", "VPY-ALICE0", 2_001)
    await h.send("judy fills the admin's day", "u-judy", "VPY-ALICE0", 2_000)
    await h.send("kate", "u-kate", "VPY-ALICE0", 3_000)
    await h.send("kate over the admin's month", "u-kate", "VPY-ALICE0", 1_001)
    await h.send("carol over the tier", "u-carol", "VPY-ALICE0", 1_000_001)
    # A duplicate while the first still runs (its lock held elsewhere).
    _, _, lock = h.key("in use")
    await h.owner.execute("SELECT pg_advisory_lock($1)", lock)
    try:
        await h.send("in use", "u-alice", "VPY-BOB000", 1)
    finally:
        await h.owner.execute("SELECT pg_advisory_unlock($1)", lock)
    # Withdraw, and the payout worker settling one and returning the other.
    assert await h.withdraw("alice withdraws", "u-alice", 1_000) == "OK"
    assert await h.withdraw("bob withdraws", "u-bob", 2_000) == "OK"
    await h.withdraw("bob withdraws too much", "u-bob", 10_000_000)
    await h.withdraw("kate over her own day", "u-kate", 901)
    await h.withdraw("kate over her own month", "u-kate", 850)
    await h.withdraw("no kyc withdraws", "u-dave", 1)
    leased = await h.app.fetch(
        "SELECT amount, currency, attempts FROM transfer_lease_payouts(10, 60) ORDER BY amount"
    )
    h.answers.append(("lease", "LEASED", [tuple(r) for r in leased]))
    for label, call in (
        ("settle", "transfer_settle_payout($1::uuid)"),
        ("settle again", "transfer_settle_payout($1::uuid)"),
    ):
        row = await h.app.fetchrow(f"SELECT * FROM {call}", h.payouts["alice withdraws"])
        await h.record(label, row)
    for label in ("return", "return again"):
        row = await h.app.fetchrow(
            "SELECT * FROM transfer_return_payout($1::uuid, 'ACCOUNT_CLOSED')",
            h.payouts["bob withdraws"],
        )
        await h.record(label, row)
    row = await h.app.fetchrow("SELECT * FROM transfer_settle_payout(gen_random_uuid())")
    await h.record("settle nothing", row)
    assert await h.withdraw("bob withdraws again", "u-bob", 2_000) == "OK"
    # transfer_caps for every tier, action and override, then with a default missing.
    for missing in (False, True):
        if missing:
            await h.owner.execute(
                "DELETE FROM system_settings WHERE key = 'limits.tier_basic.top_up.daily'"
            )
        for wallet in ("VPY-ALICE0", "VPY-CAROL0", "VPY-JUDY00", "VPY-KATE00", "VPY-NONE00"):
            for tier in ("NONE", "BASIC", "FULL"):
                for action in ("send", "withdraw", "top_up"):
                    await h.caps(f"caps {missing} {wallet} {tier} {action}", wallet, tier, action)
    await h.top_up("kate without a default day", "u-kate", 10)


_STATE = {
    "wallets": "SELECT id, status, balance FROM wallets ORDER BY id",
    "limit_usage": "SELECT wallet_id, action, day, used FROM limit_usage ORDER BY 1, 2, 3",
    "sides": "SELECT row_to_json(t)::text FROM wallet_transactions AS t",
    "movements": "SELECT kind, currency, amount, reference IS NULL FROM ledger_transactions",
    "postings": "SELECT account, currency, amount FROM ledger_postings",
    "payments": "SELECT payment_method, payment_reference FROM top_up_payments",
    "payouts": "SELECT row_to_json(p)::text FROM payouts AS p",
    "records": "SELECT caller, method, request_id::text, fingerprint,"
    " convert_from(reply, 'UTF8') FROM idempotency_records",
    "events": "SELECT producer, topic, key, payload::text, status FROM outbox_events",
}


async def _state(owner: Any) -> dict[str, list[Any]]:
    state: dict[str, list[Any]] = {}
    for name, sql in _STATE.items():
        rows = [
            tuple(_reply(v) if isinstance(v, str) and v.startswith("{") else v for v in r)
            for r in await owner.fetch(sql)
        ]
        state[name] = sorted(rows, key=repr)
    return state


async def _history(dbs: Provisioned) -> tuple[list[tuple[str, str, Any]], dict[str, list[Any]]]:
    owner = await asyncpg.connect(plain_dsn(dbs.vaultpay_owner_dsn))
    app = await asyncpg.connect(plain_dsn(dbs.app_dsn("transfer")))
    try:
        await _world(owner)
        history = History(app, owner)
        await _script(history)
        return history.answers, await _state(owner)
    finally:
        await app.close()
        await owner.close()


def _without_later_limit_figures(answer: tuple[str, str, Any]) -> tuple[str, str, Any]:
    """t0006 adds the month's limit and usage to a daily limit's refusal, t0016 the time of
    the decision to every limit's refusal, and t0020 the finished payout's withdrawal row to
    ALREADY_FINISHED (t0001 replied nothing; the test holds it to the OK's row); t0021's lease
    counts no attempt (t0001's counted the lease; the claim for the bank counts the bank calls
    now, and the script makes none); nothing else."""
    label, outcome, reply = answer
    if label == "lease":
        assert reply and all(attempts == 0 for *_, attempts in reply), answer
        return label, outcome, [(*leased, attempts + 1) for *leased, attempts in reply]
    if outcome == "ALREADY_FINISHED":
        assert isinstance(reply, dict) and reply["category"] == "WITHDRAW", answer
        assert reply["status"] in ("COMPLETED", "FAILED"), answer
        return label, outcome, None
    if isinstance(reply, dict) and outcome.endswith("_LIMIT_EXCEEDED"):
        assert reply.pop("decided_at", None) is not None, answer
    if isinstance(reply, dict) and outcome == "DAILY_LIMIT_EXCEEDED":
        reply = {k: v for k, v in reply.items() if not k.startswith("monthly_")}
    return label, outcome, reply


def _without_t0011s_held_since(payouts: list[Any]) -> list[Any]:
    """t0011 adds `payouts.held_since`, which only the payout worker's hold check sets."""
    rows = [row[0] for row in payouts]
    assert all(row.pop("held_since") is None for row in rows)
    return [(row,) for row in rows]


def _without_attempts(payouts: list[Any]) -> tuple[list[Any], list[int]]:
    """The payouts without their attempts, and their attempts, in order."""
    rows = [dict(row[0]) for row in payouts]
    attempts = [int(row.pop("attempts")) for row in rows]
    return [(row,) for row in rows], sorted(attempts)


async def test_the_functions_answer_and_write_exactly_as_t0001s(worlds: Worlds) -> None:
    old_answers, old_state = await _history(worlds.old)
    new_answers, new_state = await _history(worlds.new)
    for old, new in zip(old_answers, new_answers, strict=True):
        assert _without_later_limit_figures(new) == old
    new_state["payouts"] = _without_t0011s_held_since(new_state["payouts"])
    # t0021: the lease counts no attempt (t0001's counted each lease; the script asks no bank).
    new_state["payouts"], new_attempts = _without_attempts(new_state["payouts"])
    old_state["payouts"], old_attempts = _without_attempts(old_state["payouts"])
    [leased] = [reply for label, _, reply in old_answers if label == "lease"]
    assert new_attempts == [0] * len(new_attempts)
    assert old_attempts == [0] * (len(old_attempts) - len(leased)) + [1] * len(leased)
    for name in _STATE:
        assert new_state[name] == old_state[name], name
    outcomes = {outcome for _, outcome, _ in new_answers}
    # The script reaches every answer the functions have.
    assert outcomes >= {
        "OK",
        "REPLAY",
        "IDEMPOTENCY_KEY_REUSED",
        "IDEMPOTENCY_KEY_IN_USE",
        "PAYMENT_REFERENCE_USED",
        "WALLET_NOT_FOUND",
        "SELF_TRANSFER",
        "RECIPIENT_NOT_FOUND",
        "WALLET_CLOSED",
        "WALLET_FROZEN",
        "RECIPIENT_CLOSED",
        "CURRENCY_MISMATCH",
        "KYC_NOT_VERIFIED",
        "PER_TRANSACTION_LIMIT_EXCEEDED",
        "DAILY_LIMIT_EXCEEDED",
        "MONTHLY_LIMIT_EXCEEDED",
        "INSUFFICIENT_BALANCE",
        "ALREADY_FINISHED",
        "NOT_FOUND",
    }, outcomes
    answers = {label: (outcome, reply) for label, outcome, reply in new_answers}
    # t0020: a finished payout's ALREADY_FINISHED replies its withdrawal's row as the OK that
    # finished it replied the row (the shape every release's adapter parses).
    assert answers["settle again"] == ("ALREADY_FINISHED", answers["settle"][1])
    assert answers["return again"] == ("ALREADY_FINISHED", answers["return"][1])
    assert answers["settle"][1]["status"] == "COMPLETED"
    assert answers["return"][1]["status"] == "FAILED"
    assert answers["expired freeze sends"][0] == "OK"
    assert answers["to a frozen wallet"][0] == "OK"
    assert answers["caps False VPY-ALICE0 BASIC top_up"][1] == (1_000_000, 5_000_000, 10_000_000)
    assert answers["caps True VPY-ALICE0 BASIC top_up"][1] == (1_000_000, 0, 10_000_000)
    assert answers["caps True VPY-CAROL0 BASIC top_up"][1] == (1_500_000, 6_000_000, 9_000_000)
    assert answers["caps True VPY-JUDY00 FULL send"][1] == (3_000, 5_000, 100_000_000)
    assert answers["caps True VPY-KATE00 BASIC withdraw"][1] == (1_000_000, 900, 800)
    assert answers["kate without a default day"][0] == "DAILY_LIMIT_EXCEEDED"
