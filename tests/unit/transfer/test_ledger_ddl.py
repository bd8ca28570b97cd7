"""The ledger's migration SQL (vaultpay_transfer.adapters.ddl), without a server: t0001 runs
exactly what it shipped with, and t0002 replaces every money function and nothing else."""

from __future__ import annotations

import hashlib
import re

import pytest

from vaultpay_transfer.adapters.ddl import (
    ledger_ddl,
    ledger_t0002_ddl,
    ledger_t0002_downgrade_ddl,
    ledger_t0002_downgrade_index_ddl,
    ledger_t0002_index_ddl,
    ledger_t0003_ddl,
    ledger_t0003_downgrade_ddl,
    ledger_t0004_ddl,
    ledger_t0004_downgrade_ddl,
    ledger_t0005_ddl,
    ledger_t0005_downgrade_ddl,
    ledger_t0006_ddl,
    ledger_t0006_downgrade_ddl,
    ledger_t0010_ddl,
    ledger_t0010_downgrade_ddl,
    ledger_t0011_ddl,
    ledger_t0011_downgrade_ddl,
    ledger_t0012_ddl,
    ledger_t0012_downgrade_ddl,
    ledger_t0013_ddl,
    ledger_t0013_downgrade_ddl,
    ledger_t0014_ddl,
    ledger_t0014_downgrade_ddl,
    ledger_t0015_ddl,
    ledger_t0015_downgrade_ddl,
    ledger_t0016_ddl,
    ledger_t0016_downgrade_ddl,
    ledger_t0018_ddl,
    ledger_t0018_downgrade_ddl,
    ledger_t0019_ddl,
    ledger_t0019_downgrade_ddl,
    ledger_t0020_ddl,
    ledger_t0020_downgrade_ddl,
    ledger_t0021_ddl,
    ledger_t0021_downgrade_ddl,
    ledger_t0022_ddl,
    ledger_t0022_downgrade_ddl,
    ledger_t0023_ddl,
    ledger_t0023_downgrade_ddl,
    ledger_t0025_ddl,
    ledger_t0025_downgrade_ddl,
    ledger_t0026_ddl,
    ledger_t0026_downgrade_ddl,
    ledger_t0026_validate_ddl,
    ledger_t0027_ddl,
    ledger_t0027_downgrade_ddl,
    ledger_t0028_ddl,
    ledger_t0028_downgrade_ddl,
)
from vaultpay_transfer.adapters.stats_sql import _COUNTED_BETWEEN, _ROLL_UP
from vaultpay_transfer.adapters.transactions_sql import partial_index_predicates
from vaultpay_transfer.domain.model import TransactionCategory, TransactionStatus, TransactionType
from vaultpay_transfer.service_layer.ports import TransactionFilter

# sha256 of t0001's statements as it shipped (comments aside): a migration that ran on
# deployed databases must never change; a new revision changes what it must.
T0001_SHA256 = "bf76287210f0b9c68f97ea100e2cff6bf5b6de9e8a260c5ac113bf675b48e3ee"
_SIGNATURE = re.compile(r"^CREATE (?:OR REPLACE )?FUNCTION (\w+)\(")
_LANGUAGE = re.compile(r"^LANGUAGE (\w+)$", re.MULTILINE)


def _functions(statements: list[str]) -> dict[str, str]:
    """name -> language of each function the statements create."""
    found = {}
    for statement in statements:
        name = _SIGNATURE.match(statement)
        if name:
            language = _LANGUAGE.search(statement)
            assert language is not None, name.group(1)
            found[name.group(1)] = language.group(1)
    return found


def test_t0001_runs_exactly_what_it_shipped_with() -> None:
    statements = ledger_ddl("vaultpay_app")
    assert hashlib.sha256("\n;\n".join(statements).encode()).hexdigest() == T0001_SHA256


def test_t0002_replaces_every_money_function_of_t0001_and_creates_none() -> None:
    t0001 = _functions([s for s in ledger_ddl("vaultpay_app") if "FUNCTION transfer_" in s])
    money = {name for name in t0001 if not name.startswith(("transfer_refuse", "transfer_check"))}
    money.discard("transfer_guard_wallet_balance")  # protect.sql's triggers stay as they are
    upgrade = ledger_t0002_ddl()
    replaced = _functions(upgrade)
    assert set(replaced) == money
    assert len(upgrade) == len(replaced)
    assert all(s.startswith("CREATE OR REPLACE FUNCTION ") for s in upgrade)
    # The index goes after the functions committed, CONCURRENTLY (outside a transaction).
    assert ledger_t0002_index_ddl() == [
        "DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_ledger_idx"
    ]
    # No helper is planned again at every call: only the payout worker's top-level lease
    # (one statement, called on its own) stays a SQL function.
    assert {name for name, language in replaced.items() if language == "sql"} == {
        "transfer_lease_payouts"
    }
    assert {name for name, language in t0001.items() if language == "sql"} > {
        "transfer_caps",
        "transfer_state_refusal",
        "transfer_notify",
    }


def test_the_downgrade_puts_back_t0001s_functions_and_its_index() -> None:
    # The index first, CONCURRENTLY (outside a transaction), as t0001 defined it.
    assert ledger_t0002_downgrade_index_ddl() == [
        "DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_ledger_idx",
        "CREATE INDEX CONCURRENTLY wallet_transactions_ledger_idx\n"
        "    ON wallet_transactions (ledger_transaction_id)",
    ]
    downgrade = ledger_t0002_downgrade_ddl()
    replaced = set(_functions(ledger_t0002_ddl()))
    t0001 = [s for s in ledger_ddl("vaultpay_app") if set(_functions([s])) & replaced]
    assert len(t0001) == len(replaced)
    assert downgrade == [
        s.replace("CREATE FUNCTION ", "CREATE OR REPLACE FUNCTION ", 1) for s in t0001
    ]


def test_t0003_adds_the_close_trigger_on_wallets_and_its_downgrade_drops_it() -> None:
    upgrade = ledger_t0003_ddl()
    assert _functions(upgrade) == {"transfer_refuse_close_with_pending_withdrawal": "plpgsql"}
    assert upgrade[1].startswith("CREATE TRIGGER wallets_close_without_pending_withdrawal\n")
    assert "BEFORE UPDATE OF status ON wallets" in upgrade[1]
    assert len(upgrade) == 2
    assert ledger_t0003_downgrade_ddl() == [
        "DROP TRIGGER wallets_close_without_pending_withdrawal ON wallets",
        "DROP FUNCTION transfer_refuse_close_with_pending_withdrawal()",
    ]


def test_t0004_replaces_only_the_payout_lease_and_its_downgrade_puts_t0002s_back() -> None:
    [upgrade] = ledger_t0004_ddl()
    assert _functions([upgrade]) == {"transfer_lease_payouts": "sql"}
    assert "p.transaction_id = ANY (ARRAY(" in upgrade and " IN (" not in upgrade
    [t0002] = [s for s in ledger_t0002_ddl() if "FUNCTION transfer_lease_payouts(" in s]
    assert ledger_t0004_downgrade_ddl() == [t0002]
    # Same signature, answer, privileges and settings: only the WHERE clause differs.
    head, tail = t0002.split("WHERE p.transaction_id IN (", 1)
    assert upgrade.startswith(head)
    assert upgrade.endswith(tail.replace("FOR UPDATE SKIP LOCKED)", "FOR UPDATE SKIP LOCKED))", 1))


def test_t0005_adds_the_held_movements_for_the_app_role_and_its_downgrade_drops_them() -> None:
    upgrade = ledger_t0005_ddl("vaultpay_app")
    assert _functions(upgrade) == {
        "transfer_pass_hold": "plpgsql",
        "transfer_send_money_held": "plpgsql",
        "transfer_withdraw_held": "plpgsql",
    }
    # The hold passes to the transaction before the session's lock goes, then the movement.
    [send] = [s for s in upgrade if "FUNCTION transfer_send_money_held(" in s]
    assert send.index("transfer_pass_hold(p_lock)") < send.index("FROM transfer_send_money(")
    [passing] = [s for s in upgrade if "FUNCTION transfer_pass_hold(" in s]
    assert passing.index("pg_advisory_xact_lock(p_lock)") < passing.index("pg_advisory_unlock(")
    assert upgrade[-2].startswith("REVOKE ALL ON FUNCTION") and upgrade[-2].endswith("FROM PUBLIC")
    assert upgrade[-1].startswith("GRANT EXECUTE ON FUNCTION")
    assert upgrade[-1].endswith('TO "vaultpay_app"') and "transfer_pass_hold" not in upgrade[-1]
    assert [s.split("(")[0] for s in ledger_t0005_downgrade_ddl()] == [
        "DROP FUNCTION transfer_withdraw_held",
        "DROP FUNCTION transfer_send_money_held",
        "DROP FUNCTION transfer_pass_hold",
    ]
    with pytest.raises(ValueError, match="unsafe role name"):
        ledger_t0005_ddl('app"; DROP TABLE wallets; --')


def test_t0006_adds_the_months_figures_to_a_daily_refusal_and_nothing_else() -> None:
    [upgrade] = ledger_t0006_ddl()
    assert _functions([upgrade]) == {"transfer_limit_refusal": "plpgsql"}
    [t0002] = [s for s in ledger_t0002_ddl() if "FUNCTION transfer_limit_refusal(" in s]
    assert ledger_t0006_downgrade_ddl() == [t0002]
    # Same signature, checks and other refusals: only the daily reply has two more keys.
    daily_reply = "'used_minor', v_day_used::text, 'currency', p_currency"
    assert upgrade == t0002.replace(
        daily_reply + ")::text;",
        daily_reply
        + ",\n                                   'monthly_limit_minor', c.monthly::text,"
        + "\n                                   'monthly_used_minor', v_month_used::text)::text;",
        1,
    )


def test_t0010_refuses_other_services_methods_in_the_claim_and_record_and_nothing_else() -> None:
    upgrade = ledger_t0010_ddl()
    assert _functions(upgrade) == {"transfer_claim": "plpgsql", "transfer_remember": "plpgsql"}
    t0002 = [
        s
        for s in ledger_t0002_ddl()
        if s.startswith(
            (
                "CREATE OR REPLACE FUNCTION transfer_claim(",
                "CREATE OR REPLACE FUNCTION transfer_remember(",
            )
        )
    ]
    assert ledger_t0010_downgrade_ddl() == t0002
    # Same signatures, settings and bodies: the method check first, and only that added.
    guard = (
        "    IF p_method IS NULL OR left(p_method, 19) <> '/vaultpay.transfer.' THEN\n"
        "        RAISE EXCEPTION 'the ledger keeps transfer''s idempotency records only, not"
        " method %',\n"
        "            quote_nullable(p_method)\n"
        "            USING ERRCODE = 'insufficient_privilege';\n"
        "    END IF;\n"
    )
    assert len("/vaultpay.transfer.") == 19
    assert upgrade == [s.replace("\nBEGIN\n", "\nBEGIN\n" + guard, 1) for s in t0002]
    assert all("SECURITY DEFINER" not in s for s in upgrade)


def test_t0011_adds_the_payout_hold_for_the_app_role_and_its_downgrade_drops_it() -> None:
    upgrade = ledger_t0011_ddl("vaultpay_app")
    assert upgrade[0] == "ALTER TABLE payouts ADD COLUMN held_since timestamptz"
    assert _functions(upgrade) == {"transfer_hold_payout_if_frozen": "plpgsql"}
    hold = upgrade[1]
    assert hold.startswith("CREATE FUNCTION transfer_hold_payout_if_frozen(") and len(upgrade) == 4
    assert "SECURITY DEFINER\nSET search_path = pg_catalog, public, pg_temp\n" in hold
    # The payout's row first, then the wallet's (transfer_return_payout's order).
    assert hold.index("FROM payouts WHERE") < hold.index("FROM wallets AS w")
    assert "FOR UPDATE;" in hold and "FOR SHARE;" in hold
    assert "f.source = 'ADMIN'" in hold
    assert upgrade[-2].startswith("REVOKE ALL ON FUNCTION") and upgrade[-2].endswith("FROM PUBLIC")
    assert upgrade[-1].startswith("GRANT EXECUTE ON FUNCTION")
    assert upgrade[-1].endswith('TO "vaultpay_app"')
    assert ledger_t0011_downgrade_ddl() == [
        "DROP FUNCTION transfer_hold_payout_if_frozen(uuid, double precision)",
        "ALTER TABLE payouts DROP COLUMN held_since",
    ]
    with pytest.raises(ValueError, match="unsafe role name"):
        ledger_t0011_ddl('app"; DROP TABLE payouts; --')


def test_t0012_takes_the_movements_time_after_the_wallet_lock_and_changes_nothing_else() -> None:
    upgrade = ledger_t0012_ddl()
    timed = (
        "transfer_send_money",
        "transfer_top_up",
        "transfer_withdraw",
        "transfer_return_payout",
    )
    assert _functions(upgrade) == dict.fromkeys(timed, "plpgsql")
    t0002 = [
        s
        for s in ledger_t0002_ddl()
        if s.startswith(tuple(f"CREATE OR REPLACE FUNCTION {name}(" for name in timed))
    ]
    assert ledger_t0012_downgrade_ddl() == t0002
    # The last line of each function's wallet lock (and, where one follows, its NOT FOUND).
    locked = (
        "    END LOOP;\n",
        "    IF NOT FOUND THEN outcome := 'WALLET_NOT_FOUND'; RETURN NEXT; RETURN; END IF;\n",
        "    IF NOT FOUND THEN outcome := 'WALLET_NOT_FOUND'; RETURN NEXT; RETURN; END IF;\n",
        "    FROM wallets WHERE id = p.wallet_id FOR UPDATE;\n",
    )
    early = "    v_now timestamptz := clock_timestamp();\n"
    late = "    v_now := clock_timestamp();\n"
    assert all(
        s.count(early) == 1 and s.count(lock) == 1 for s, lock in zip(t0002, locked, strict=True)
    )
    # The same functions byte for byte, but for where v_now is read: under the lock.
    assert upgrade == [
        s.replace(early, "    v_now timestamptz;\n").replace(lock, lock + late)
        for s, lock in zip(t0002, locked, strict=True)
    ]
    for s in upgrade:
        body = s[s.index("\nBEGIN\n") :]
        assert "v_now" not in body[: body.index(late)]
        assert body.index("FOR UPDATE") < body.index(late)
        assert "SECURITY DEFINER\nSET search_path = pg_catalog, public, pg_temp\n" in s


def test_t0013_only_lengthens_the_payout_lease_with_its_attempts() -> None:
    [upgrade] = ledger_t0013_ddl()
    assert _functions([upgrade]) == {"transfer_lease_payouts": "sql"}
    [t0004] = ledger_t0004_ddl()
    assert ledger_t0013_downgrade_ddl() == [t0004]
    # t0004's lease byte for byte, but for the lease's length: doubled per earlier attempt
    # (the SET reads the row's attempts before this lease), at most 64 times.
    fixed = "        available_at = clock_timestamp() + make_interval(secs => p_lease_seconds)\n"
    backoff = (
        "        available_at = clock_timestamp()\n"
        "            + make_interval(secs => p_lease_seconds * power(2, least(p.attempts, 6)))\n"
    )
    assert t0004.count(fixed) == 1
    assert upgrade == t0004.replace(fixed, backoff)
    assert "SECURITY DEFINER\nSET search_path = pg_catalog, public, pg_temp\n" in upgrade


def test_t0014_fences_the_lease_and_replaces_the_hold_check_with_the_claim() -> None:
    upgrade = ledger_t0014_ddl("vaultpay_app")
    lease_sig = "transfer_lease_payouts(integer, double precision)"
    claim_sig = (
        "transfer_claim_payout_for_bank(uuid, timestamptz, double precision, double precision)"
    )
    assert _functions(upgrade) == {
        "transfer_lease_payouts": "sql",
        "transfer_claim_payout_for_bank": "plpgsql",
    }
    assert len(upgrade) == 8
    # A new type of result: dropped and created again, its privileges given again.
    assert upgrade[0] == f"DROP FUNCTION {lease_sig}"
    assert upgrade[2] == f"REVOKE ALL ON FUNCTION {lease_sig} FROM PUBLIC"
    assert upgrade[3] == f'GRANT EXECUTE ON FUNCTION {lease_sig} TO "vaultpay_app"'
    # t0013's lease byte for byte, but for the returned lease's end.
    [t0013] = ledger_t0013_ddl()
    assert upgrade[1] == (
        t0013.replace("CREATE OR REPLACE FUNCTION ", "CREATE FUNCTION ", 1)
        .replace(
            "               attempts integer)",
            "               attempts integer, lease_until timestamptz)",
            1,
        )
        .replace("p.currency, p.attempts\n", "p.currency, p.attempts, p.available_at\n", 1)
    )
    assert "SECURITY DEFINER\nSET search_path = pg_catalog, public, pg_temp\n" in upgrade[1]
    assert upgrade[4] == "DROP FUNCTION transfer_hold_payout_if_frozen(uuid, double precision)"
    claim = upgrade[5]
    assert claim.startswith("CREATE FUNCTION transfer_claim_payout_for_bank(")
    assert "RETURNS TABLE (answer text, lease_until timestamptz)" in claim
    assert "VOLATILE\nSECURITY DEFINER\nSET search_path = pg_catalog, public, pg_temp\n" in claim
    # The payout's row first, then (past the fence) the wallet's, as t0011 took them.
    locked = claim.index("FROM payouts WHERE payouts.transaction_id = p_transaction_id FOR UPDATE;")
    fence = claim.index("IF p.available_at IS DISTINCT FROM p_lease_until THEN")
    wallet = claim.index("FROM wallets AS w WHERE w.id = p.wallet_id FOR SHARE;")
    assert locked < claim.index("'FINISHED'") < fence < wallet
    # LEASE_LOST changes nothing: the one statement before it is the payout's lock.
    assert claim[fence:].index("'LEASE_LOST'") < claim[fence:].index("END IF;")
    assert claim.count("UPDATE payouts") == 2  # the hold's and the renewal's, past the locks
    assert claim.index("UPDATE payouts") > wallet
    # t0011's hold (after the locks), then the renewal that covers the bank call.
    assert "f.source = 'ADMIN'" in claim
    assert "attempts = greatest(payouts.attempts - 1, 0)" in claim
    assert "v_now + make_interval(secs => p_bank_seconds)" in claim
    assert upgrade[6] == f"REVOKE ALL ON FUNCTION\n    {claim_sig}\nFROM PUBLIC"
    assert upgrade[7] == f'GRANT EXECUTE ON FUNCTION\n    {claim_sig}\nTO "vaultpay_app"'

    hold = [s for s in ledger_t0011_ddl("vaultpay_app") if "transfer_hold_payout_if_frozen" in s]
    assert len(hold) == 3
    assert ledger_t0014_downgrade_ddl("vaultpay_app") == [
        "DROP FUNCTION transfer_claim_payout_for_bank(uuid, timestamptz, double precision,\n"
        "                                             double precision)",
        f"DROP FUNCTION {lease_sig}",
        t0013,
        upgrade[2],
        upgrade[3],
        *hold,
    ]
    with pytest.raises(ValueError, match="unsafe role name"):
        ledger_t0014_ddl('app"; DROP TABLE payouts; --')


def test_t0015_adds_the_rare_listing_indexes_concurrently_that_no_p2p_send_writes() -> None:
    upgrade = ledger_t0015_ddl()
    rare_category = (
        "CREATE INDEX CONCURRENTLY wallet_transactions_rare_category_idx\n"
        "    ON wallet_transactions (category, created_at DESC, id DESC)\n"
        "    WHERE category NOT IN ('P2P_SEND', 'P2P_RECEIVE')"
    )
    rare_status = (
        "CREATE INDEX CONCURRENTLY wallet_transactions_rare_status_idx\n"
        "    ON wallet_transactions (status, created_at DESC, id DESC)\n"
        "    WHERE status IN ('FAILED', 'REVERSED')"
    )
    # A build that failed left an INVALID index: running the migration again builds it anew.
    assert upgrade == [
        "DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_rare_category_idx",
        rare_category,
        "DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_rare_status_idx",
        rare_status,
    ]
    assert ledger_t0015_downgrade_ddl() == [
        "DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_rare_status_idx",
        "DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_rare_category_idx",
    ]


def test_t0016_adds_the_decision_time_to_a_limit_refusal_and_changes_nothing_else() -> None:
    upgrade = ledger_t0016_ddl()
    limited = ("transfer_send_money", "transfer_top_up", "transfer_withdraw")
    assert _functions(upgrade) == dict.fromkeys(limited, "plpgsql")
    t0012 = [
        s
        for s in ledger_t0012_ddl()
        if s.startswith(tuple(f"CREATE OR REPLACE FUNCTION {name}(" for name in limited))
    ]
    assert ledger_t0016_downgrade_ddl() == t0012
    # The branch that returns transfer_limit_refusal's row, and only it, adds v_now: the
    # movement's time, read under the wallet's lock, by which the limits were counted.
    refused = "AS l;\n    IF FOUND THEN RETURN NEXT; RETURN; END IF;\n"
    told = (
        "AS l;\n    IF FOUND THEN\n"
        "        reply := (reply::jsonb || jsonb_build_object('decided_at', v_now))::text;\n"
        "        RETURN NEXT; RETURN;\n"
        "    END IF;\n"
    )
    assert all(s.count(refused) == 1 for s in t0012)
    assert upgrade == [s.replace(refused, told) for s in t0012]
    for s in upgrade:
        assert "FROM transfer_limit_refusal(" in s.split(told)[0].rsplit("\n", 2)[-1]
        assert "SECURITY DEFINER\nSET search_path = pg_catalog, public, pg_temp\n" in s


_RARE_COMPLETED = (
    "CREATE INDEX CONCURRENTLY wallet_transactions_rare_completed_idx\n"
    "    ON wallet_transactions (completed_at)\n"
    "    WHERE category NOT IN ('P2P_SEND', 'P2P_RECEIVE')\n"
    "      AND status IN ('COMPLETED', 'REVERSED')\n"
    "      AND (type = 'DEBIT' OR category = 'TOP_UP')"
)


def test_t0018_adds_the_counted_rare_rows_index_concurrently_that_no_p2p_send_writes() -> None:
    # A build that failed left an INVALID index: running the migration again builds it anew.
    assert ledger_t0018_ddl() == [
        "DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_rare_completed_idx",
        _RARE_COMPLETED,
    ]
    assert ledger_t0018_downgrade_ddl() == [
        "DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_rare_completed_idx"
    ]


def test_t0019_answers_a_credited_reference_right_after_the_wallet_lock_and_nothing_else() -> None:
    [upgrade] = ledger_t0019_ddl()
    assert _functions([upgrade]) == {"transfer_top_up": "plpgsql"}
    [t0016] = [
        s for s in ledger_t0016_ddl() if s.startswith("CREATE OR REPLACE FUNCTION transfer_top_up(")
    ]
    assert ledger_t0019_downgrade_ddl() == [t0016]
    # t0016's function byte for byte, but for the lookup of the payment reference: right after
    # the wallet's row lock (and the time read under it), before the wallet's state.
    locked = (
        "    FROM wallets WHERE user_id = p_user_id FOR UPDATE;\n"
        "    IF NOT FOUND THEN outcome := 'WALLET_NOT_FOUND'; RETURN NEXT; RETURN; END IF;\n"
        "    v_now := clock_timestamp();\n"
    )
    looked_up = (
        "    -- A reference already credited is answered first, whatever else the wallet would be\n"
        "    -- refused for; read under the row lock, after any earlier top-up of this wallet ended.\n"
        "    IF EXISTS (SELECT 1 FROM top_up_payments\n"
        "               WHERE payment_method = p_payment_method\n"
        "                 AND payment_reference = p_payment_reference) THEN\n"
        "        outcome := 'PAYMENT_REFERENCE_USED'; RETURN NEXT; RETURN;\n"
        "    END IF;\n"
    )
    assert t0016.count(locked) == 1
    assert upgrade == t0016.replace(locked, locked + looked_up)
    body = upgrade[upgrade.index("\nBEGIN\n") :]
    # After the claim (a retry under the same request id replays) and the lock; before every
    # other refusal; the INSERT ... ON CONFLICT DO NOTHING stays as the backstop.
    assert body.index("FROM transfer_claim(") < body.index("FOR UPDATE") < body.index(looked_up)
    assert body.index(looked_up) < body.index("transfer_state_refusal(")
    assert (
        "ON CONFLICT DO NOTHING;\n    IF NOT FOUND THEN outcome := 'PAYMENT_REFERENCE_USED'" in body
    )
    assert "SECURITY DEFINER\nSET search_path = pg_catalog, public, pg_temp\n" in upgrade


def test_the_stats_state_the_rare_completed_index_predicate_as_the_index_does() -> None:
    """The stats' rare branch states t0018's WHERE word for word (a generic plan uses a partial
    index only then), in the live count and in the rollup (t0027); the P2P branch states the
    same counted rows of the P2P categories."""
    where = " ".join(_RARE_COMPLETED.split("\n    WHERE ", 1)[1].split())
    p2p = where.replace("category NOT IN (", "category IN (")
    for counting in (_COUNTED_BETWEEN, _ROLL_UP):
        statement = " ".join(str(counting).split())
        assert statement.count(f"WHERE {where} AND completed_at >= :lo") == 1
        assert statement.count(f"WHERE {p2p} AND created_at >= :lo") == 1


def _predicates(flt: TransactionFilter) -> list[str]:
    return [str(p).removeprefix("wallet_transactions.") for p in partial_index_predicates(flt)]


def test_the_staff_listing_states_the_partial_indexes_predicates_as_the_indexes_do() -> None:
    """A generic plan uses a partial index only if the query states its predicate: the
    listing's literal must be the index's WHERE, word for word."""
    wheres = [s.split("\n    WHERE ", 1)[1] for s in ledger_t0015_ddl() if "\n    WHERE " in s]
    for category in TransactionCategory:
        stated = _predicates(TransactionFilter(category=category))
        common = category in (TransactionCategory.P2P_SEND, TransactionCategory.P2P_RECEIVE)
        assert stated == ([] if common else [wheres[0]]), category
    for status in TransactionStatus:
        stated = _predicates(TransactionFilter(status=status))
        if status in (TransactionStatus.FAILED, TransactionStatus.REVERSED):
            assert stated == [wheres[1]]
        elif status is TransactionStatus.PENDING:
            assert stated == ["status = 'PENDING'"]  # t0001's wallet_transactions_pending_idx
        else:
            assert stated == []
    both = TransactionFilter(
        category=TransactionCategory.REVERSAL, status=TransactionStatus.REVERSED
    )
    assert _predicates(both) == wheres
    # A user's or a wallet's listing keeps its own index: nothing is added.
    for narrowed in (
        TransactionFilter(user_id="u", category=TransactionCategory.REVERSAL),
        TransactionFilter(wallet_id="VPY-AAAAAA", status=TransactionStatus.FAILED),
    ):
        assert _predicates(narrowed) == []


def test_t0028_indexes_the_returned_payouts_and_the_listing_states_their_predicate() -> None:
    """Review of 2026-12-05: staff listing the returned payouts (WITHDRAW CREDIT) read every
    rare row of the table. t0028's two indexes (everyone's, each owner's) hold those rows
    alone, built and dropped CONCURRENTLY, and the listing states their WHERE word for word."""
    upgrade = ledger_t0028_ddl()
    creates = [s for s in upgrade if s.startswith("CREATE INDEX CONCURRENTLY")]
    assert len(creates) == 2 and len(upgrade) == 4  # each after a DROP ... IF EXISTS
    wheres = {s.split("\n    WHERE ", 1)[1] for s in creates}
    assert wheres == {"category = 'WITHDRAW' AND type = 'CREDIT'"}
    returns = TransactionFilter(category=TransactionCategory.WITHDRAW, type=TransactionType.CREDIT)
    stated = [p.replace("wallet_transactions.", "") for p in _predicates(returns)]
    assert stated == list(wheres)
    assert ledger_t0028_downgrade_ddl() == [
        "DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_user_payout_returns_idx",
        "DROP INDEX CONCURRENTLY IF EXISTS wallet_transactions_payout_returns_idx",
    ]


def _t0002s(name: str) -> str:
    [statement] = [
        s for s in ledger_t0002_ddl() if s.startswith(f"CREATE OR REPLACE FUNCTION {name}(")
    ]
    return statement


def _t0012s_return() -> str:
    [statement] = [
        s
        for s in ledger_t0012_ddl()
        if s.startswith("CREATE OR REPLACE FUNCTION transfer_return_payout(")
    ]
    return statement


def test_t0020_replaces_four_functions_and_its_downgrade_puts_theirs_back() -> None:
    upgrade = ledger_t0020_ddl()
    assert _functions(upgrade) == dict.fromkeys(
        ("transfer_caps", "transfer_top_up", "transfer_settle_payout", "transfer_return_payout"),
        "plpgsql",
    )
    assert len(upgrade) == 4
    assert ledger_t0020_downgrade_ddl() == [
        _t0002s("transfer_caps"),
        *ledger_t0019_ddl(),
        _t0002s("transfer_settle_payout"),
        _t0012s_return(),
    ]


def test_t0020_tells_a_finished_payouts_withdrawal_row_and_changes_nothing_else() -> None:
    silent = "    IF p.status <> 'PENDING' THEN outcome := 'ALREADY_FINISHED'; RETURN NEXT; RETURN; END IF;\n"
    upgrade = ledger_t0020_ddl()
    # The reply is built as each function's OK reply is (row_to_json of the withdrawal's
    # wallet_transactions row, under the same alias): the one shape every adapter parses.
    for name, before, alias in (
        ("transfer_settle_payout", _t0002s("transfer_settle_payout"), "t"),
        ("transfer_return_payout", _t0012s_return(), "u"),
    ):
        told = (
            "    IF p.status <> 'PENDING' THEN\n"
            "        outcome := 'ALREADY_FINISHED';\n"
            f"        SELECT row_to_json({alias})::text INTO reply FROM wallet_transactions AS {alias}\n"
            f"        WHERE {alias}.id = p_transaction_id;\n"
            "        RETURN NEXT; RETURN;\n"
            "    END IF;\n"
        )
        [after] = [s for s in upgrade if s.startswith(f"CREATE OR REPLACE FUNCTION {name}(")]
        assert before.count(silent) == 1
        assert f"RETURNING row_to_json({alias})::text INTO reply;" in before
        assert after == before.replace(silent, told)


def test_t0020_caps_a_window_without_a_base_at_0_and_changes_nothing_else() -> None:
    [upgrade] = [s for s in ledger_t0020_ddl() if "FUNCTION transfer_caps(" in s]
    t0002 = _t0002s("transfer_caps")
    # t0002's function byte for byte, but for the three folds: least() is never handed a
    # missing base (it would ignore the NULL and answer the user's own limit).
    for window, admin in (
        ("per_transaction", "o.admin_per_transaction"),
        ("daily", "o.admin_daily"),
        ("monthly", "o.admin_monthly"),
    ):
        base = f"coalesce({admin}, d.{window})"
        assert f"CASE WHEN {base} IS NULL THEN 0" in upgrade
        assert f"coalesce(least({base}," not in upgrade
    folds = upgrade.split("    SELECT\n", 1)[1].split("    INTO per_transaction", 1)[0]
    head, tail = upgrade.split(folds)
    assert t0002.startswith(head) and t0002.endswith(tail)


def test_t0020_tells_a_credited_reference_early_only_to_its_own_wallet() -> None:
    [upgrade] = [s for s in ledger_t0020_ddl() if "FUNCTION transfer_top_up(" in s]
    [t0019] = ledger_t0019_ddl()
    anyone = (
        "    IF EXISTS (SELECT 1 FROM top_up_payments\n"
        "               WHERE payment_method = p_payment_method\n"
        "                 AND payment_reference = p_payment_reference) THEN\n"
    )
    own = (
        "    IF EXISTS (SELECT 1 FROM top_up_payments AS p\n"
        "               JOIN wallet_transactions AS t ON t.id = p.transaction_id\n"
        "               WHERE p.payment_method = p_payment_method\n"
        "                 AND p.payment_reference = p_payment_reference\n"
        "                 AND t.wallet_id = w.id) THEN\n"
    )
    assert t0019.count(anyone) == 1 and upgrade.count(own) == 1
    # The early lookup still comes right after the wallet's lock, before its state.
    assert upgrade.index("FOR UPDATE;") < upgrade.index(own)
    assert upgrade.index(own) < upgrade.index("transfer_state_refusal(")
    # The backstop stays: the INSERT that refuses a reference credited to another wallet.
    backstop = (
        "    ON CONFLICT DO NOTHING;\n    IF NOT FOUND THEN outcome := 'PAYMENT_REFERENCE_USED';"
    )
    assert upgrade.count(backstop) == 1 and t0019.count(backstop) == 1

    def code(statement: str) -> list[str]:
        return [line for line in statement.splitlines() if not line.lstrip().startswith("--")]

    assert code(upgrade) == code(t0019.replace(anyone, own))


_CLAIM_SIG = "transfer_claim_payout_for_bank(uuid, timestamptz, double precision, double precision)"


def test_t0021_counts_a_payouts_attempts_at_the_claim_for_the_bank_not_at_the_lease() -> None:
    upgrade = ledger_t0021_ddl("vaultpay_app")
    t0014 = ledger_t0014_ddl("vaultpay_app")
    assert _functions(upgrade) == {
        "transfer_lease_payouts": "sql",
        "transfer_claim_payout_for_bank": "plpgsql",
    }
    assert len(upgrade) == 6
    # The lease: t0014's byte for byte (its type of result too: CREATE OR REPLACE keeps its
    # privileges), but for the attempt it no longer counts; its backoff reads the bank calls.
    counted = "    SET attempts = p.attempts + 1,\n        available_at = clock_timestamp()\n"
    uncounted = "    SET available_at = clock_timestamp()\n"
    assert t0014[1].count(counted) == 1
    assert upgrade[0] == t0014[1].replace(
        "CREATE FUNCTION ", "CREATE OR REPLACE FUNCTION ", 1
    ).replace(counted, uncounted)
    assert "power(2, least(p.attempts, 6))" in upgrade[0]
    # The claim: a new type of result, so dropped and created again with t0014's privileges.
    assert upgrade[1] == (
        "DROP FUNCTION transfer_claim_payout_for_bank(uuid, timestamptz, double precision,\n"
        "                                             double precision)"
    )
    assert upgrade[3:5] == t0014[6:]
    assert upgrade[4] == f'GRANT EXECUTE ON FUNCTION\n    {_CLAIM_SIG}\nTO "vaultpay_app"'
    # t0014's claim, but for the attempt: the hold gives none back (the lease took none), the
    # renewal for the bank call counts it and returns the count.
    given_back = "            attempts = greatest(payouts.attempts - 1, 0),\n"
    renewal = "                                v_now + make_interval(secs => p_bank_seconds)),\n"
    assert t0014[5].count(given_back) == 1 and t0014[5].count(renewal) == 1
    expected = (
        t0014[5]
        .replace(
            "RETURNS TABLE (answer text, lease_until timestamptz)",
            "RETURNS TABLE (answer text, lease_until timestamptz, attempts integer)",
            1,
        )
        .replace(given_back, "", 1)
        .replace(renewal, renewal + "        attempts = payouts.attempts + 1,\n", 1)
        .replace(
            "    RETURNING payouts.available_at INTO lease_until;\n"
            "    answer := CASE WHEN p.held_since IS NULL THEN 'CLEAR'",
            "    RETURNING payouts.available_at, payouts.attempts INTO lease_until, attempts;\n"
            "    answer := CASE WHEN p.held_since IS NULL THEN 'CLEAR'",
            1,
        )
    )
    assert upgrade[2] == expected
    assert upgrade[2].count("attempts = payouts.attempts + 1") == 1
    assert upgrade[2].index("attempts = payouts.attempts + 1") > upgrade[2].index("'STILL_HELD'")
    with pytest.raises(ValueError, match="unsafe role name"):
        ledger_t0021_ddl('app"; DROP TABLE payouts; --')


def test_t0021_lets_transfers_role_read_who_owns_a_wallet_and_nothing_more() -> None:
    """The ledger verifier compares each history row's user_id with its wallet's owner."""
    upgrade = ledger_t0021_ddl("vaultpay_app")
    assert upgrade[5] == 'GRANT SELECT (user_id) ON wallets TO "vaultpay_app"'
    assert [s for s in upgrade if "GRANT" in s and "ON wallets" in s] == [upgrade[5]]
    assert ledger_t0021_downgrade_ddl("vaultpay_app")[0] == (
        'REVOKE SELECT (user_id) ON wallets FROM "vaultpay_app"'
    )


def test_t0021s_downgrade_puts_t0014s_claim_and_lease_back() -> None:
    t0014 = ledger_t0014_ddl("vaultpay_app")
    assert ledger_t0021_downgrade_ddl("vaultpay_app") == [
        'REVOKE SELECT (user_id) ON wallets FROM "vaultpay_app"',
        ledger_t0021_ddl("vaultpay_app")[1],
        *t0014[5:8],
        t0014[1].replace("CREATE FUNCTION ", "CREATE OR REPLACE FUNCTION ", 1),
    ]


def test_t0022_lets_transfers_role_read_which_freeze_holds_a_wallet_and_nothing_more() -> None:
    """A WALLET_FROZEN the ledger answers tells the freeze (the ledger adapter reads it after
    the refusal): which freeze and when it ends, not its note nor who among staff set it."""
    assert ledger_t0022_ddl("vaultpay_app") == [
        'GRANT SELECT (wallet_id, source, until) ON wallet_freezes TO "vaultpay_app"'
    ]
    assert ledger_t0022_downgrade_ddl("vaultpay_app") == [
        'REVOKE SELECT (wallet_id, source, until) ON wallet_freezes FROM "vaultpay_app"'
    ]
    with pytest.raises(ValueError, match="unsafe role name"):
        ledger_t0022_ddl('app"; DROP TABLE wallet_freezes; --')


_REQUEST_ID_USED = (
    "    IF EXISTS (SELECT 1 FROM wallet_transactions AS t\n"
    "               WHERE t.user_id = p_user_id AND t.request_id = p_request_id) THEN\n"
    "        outcome := 'IDEMPOTENCY_KEY_REUSED'; RETURN NEXT; RETURN;\n"
    "    END IF;\n"
)


def _code(statement: str) -> list[str]:
    return [line for line in statement.splitlines() if not line.lstrip().startswith("--")]


@pytest.mark.parametrize(
    ("name", "before"),
    [
        ("transfer_send_money", "    IF r IS NULL THEN"),
        ("transfer_withdraw", "    outcome := transfer_state_refusal(w.id, w.status);"),
        ("transfer_top_up", "    outcome := transfer_state_refusal(w.id, w.status);"),
    ],
)
def test_t0023_answers_a_used_request_id_before_the_wallets_other_refusals(
    name: str, before: str
) -> None:
    """A retry whose stored answer expired (48 h) was refused for the wallet's state, the
    recipient's, the currency or KYC, a payment its commit contradicts: the request id's check
    now comes first under the lock. Otherwise the function of t0016 (send, withdraw) or t0020
    (top-up), line for line."""
    [upgrade] = [s for s in ledger_t0023_ddl("vaultpay_app") if f"FUNCTION {name}(" in s]
    earlier = ledger_t0016_ddl() if name != "transfer_top_up" else ledger_t0020_ddl()
    [previous] = [s for s in earlier if f"FUNCTION {name}(" in s]
    assert previous.count(_REQUEST_ID_USED) == 1 and upgrade.count(_REQUEST_ID_USED) == 1
    assert upgrade.index("FOR UPDATE") < upgrade.index(_REQUEST_ID_USED) < upgrade.index(before)
    assert upgrade.index(_REQUEST_ID_USED) < upgrade.index("transfer_state_refusal(")
    moved = previous.replace(_REQUEST_ID_USED, "").replace(before, _REQUEST_ID_USED + before, 1)
    assert _code(upgrade) == _code(moved)


def test_t0023s_hold_lookup_reads_again_after_taking_the_key_and_only_transfer_runs_it() -> None:
    upgrade = ledger_t0023_ddl("vaultpay_app")
    [lookup] = [s for s in upgrade if s.startswith("CREATE FUNCTION transfer_hold_lookup(")]
    read = "    FROM idempotency_records AS r\n"
    assert lookup.count(read) == 2
    assert lookup.index(read) < lookup.index("pg_try_advisory_lock(p_lock)") < lookup.rindex(read)
    assert "SECURITY DEFINER" not in lookup  # the caller's own SELECT of the records
    assert upgrade[-2:] == [
        "REVOKE ALL ON FUNCTION transfer_hold_lookup(text, text, uuid, bigint) FROM PUBLIC",
        "GRANT EXECUTE ON FUNCTION transfer_hold_lookup(text, text, uuid, bigint)"
        ' TO "vaultpay_app"',
    ]
    with pytest.raises(ValueError, match="unsafe role name"):
        ledger_t0023_ddl('app"; DROP TABLE payouts; --')


def test_t0023s_downgrade_drops_the_lookup_and_puts_the_money_functions_back() -> None:
    sent_withdrawn = [s for s in ledger_t0016_ddl() if "FUNCTION transfer_top_up(" not in s]
    [top_up] = [s for s in ledger_t0020_ddl() if "FUNCTION transfer_top_up(" in s]
    assert ledger_t0023_downgrade_ddl("vaultpay_app") == [
        "DROP FUNCTION transfer_hold_lookup(text, text, uuid, bigint)",
        *sent_withdrawn,
        top_up,
    ]


def test_t0025_revokes_publics_execute_of_the_close_guard_and_the_downgrade_gives_it() -> None:
    """t0007 made t0003's trigger function SECURITY DEFINER with PUBLIC's default EXECUTE: any
    role could attach it to a table of its own and read the ledger through it."""
    guard = "transfer_refuse_close_with_pending_withdrawal()"
    assert ledger_t0025_ddl() == [f"REVOKE EXECUTE ON FUNCTION {guard} FROM PUBLIC"]
    assert ledger_t0025_downgrade_ddl() == [f"GRANT EXECUTE ON FUNCTION {guard} TO PUBLIC"]


def test_t0026_ties_the_reversed_amount_to_the_status_added_not_valid_then_validated() -> None:
    """Only a settled row carries a reversed amount; REVERSED is reversed in full, COMPLETED at
    most in part. Each CHECK is added NOT VALID (repeatable: dropped first), then validated by
    a statement of its own (the migration runs those outside its transaction); the downgrade
    drops the three."""
    checks = {
        "wallet_transactions_reversed_only_when_settled": (
            "reversed_amount = 0 OR status IN ('COMPLETED', 'REVERSED')"
        ),
        "wallet_transactions_reversed_status_in_full": (
            "status <> 'REVERSED' OR reversed_amount = amount"
        ),
        "wallet_transactions_completed_reversed_in_part": (
            "status <> 'COMPLETED' OR reversed_amount < amount"
        ),
    }
    drops = [f"DROP CONSTRAINT IF EXISTS {name}" for name in checks]
    adds = [
        f"ADD CONSTRAINT {name}\n        CHECK ({rule}) NOT VALID" for name, rule in checks.items()
    ]
    assert ledger_t0026_ddl() == [
        "ALTER TABLE wallet_transactions\n    " + ",\n    ".join([*drops, *adds])
    ]
    assert ledger_t0026_validate_ddl() == [
        f"ALTER TABLE wallet_transactions VALIDATE CONSTRAINT {name}" for name in checks
    ]
    assert ledger_t0026_downgrade_ddl() == [
        "ALTER TABLE wallet_transactions\n    " + ",\n    ".join(drops)
    ]


def test_t0027_creates_the_stats_rollup_for_transfers_role_only() -> None:
    """The rollup's two tables, the watermark's one row, written and read by transfer's role
    (quoted), no one else; the downgrade drops both."""
    upgrade = ledger_t0027_ddl("vaultpay_transfer_app")
    assert any(s.startswith("CREATE TABLE transfer_stats_hourly") for s in upgrade)
    assert any(s.startswith("CREATE TABLE transfer_stats_rollup") for s in upgrade)
    assert (
        "INSERT INTO transfer_stats_rollup (only_row, rolled_until) VALUES (true, NULL)" in upgrade
    )
    grants = [s for s in upgrade if s.startswith("GRANT")]
    assert grants == [
        'GRANT SELECT, INSERT, DELETE ON transfer_stats_hourly TO "vaultpay_transfer_app"',
        'GRANT SELECT, UPDATE (rolled_until) ON transfer_stats_rollup TO "vaultpay_transfer_app"',
    ]
    assert ledger_t0027_downgrade_ddl() == [
        "DROP TABLE IF EXISTS transfer_stats_rollup",
        "DROP TABLE IF EXISTS transfer_stats_hourly",
    ]
    with pytest.raises(ValueError, match="unsafe role name"):
        ledger_t0027_ddl('app"; DROP TABLE payouts; --')
