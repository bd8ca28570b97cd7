"""The one statement of wallet's purges (`OldRowsPurge`): its shape, which the plan tests in
tests/integration/wallet/ prove keeps to the index, and the arguments it refuses."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from vaultpay_wallet.adapters.notification_retention_sql import old_notifications_delete
from vaultpay_wallet.adapters.old_rows_purge_sql import OldRowsPurge
from vaultpay_wallet.adapters.retention_sql import PURGED_TABLES, expired_rows_delete

CUT = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def test_the_statement_picks_the_oldest_rows_by_ctid_and_rechecks_the_cut() -> None:
    assert OldRowsPurge("notifications", "created_at").statement(CUT, 10).text == (
        "DELETE FROM notifications WHERE ctid = ANY(ARRAY("
        "SELECT ctid FROM notifications WHERE created_at < :older_than"
        " ORDER BY created_at LIMIT :batch_size))"
        " AND (created_at < :older_than) IS TRUE"
    )


def test_both_purges_send_that_statement_with_their_own_table_and_column() -> None:
    assert old_notifications_delete(CUT, 10).text == (
        OldRowsPurge("notifications", "created_at").statement(CUT, 10).text
    )
    for table in PURGED_TABLES:
        sent = expired_rows_delete(table, CUT, 10).text
        assert sent == OldRowsPurge(table, "expires_at").statement(CUT, 10).text


@pytest.mark.parametrize(
    ("table", "column"),
    [("notifications; DROP TABLE wallets", "created_at"), ("notifications", "created_at < now()")],
)
def test_only_plain_names_are_written_into_the_sql(table: str, column: str) -> None:
    with pytest.raises(ValueError, match="not a plain name"):
        OldRowsPurge(table, column)


def test_a_naive_cut_or_an_empty_batch_is_refused() -> None:
    purge = OldRowsPurge("notifications", "created_at")
    with pytest.raises(ValueError, match="aware"):
        purge.statement(CUT.replace(tzinfo=None), 10)
    with pytest.raises(ValueError, match="at least 1"):
        purge.statement(CUT, 0)
