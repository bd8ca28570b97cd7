"""The ledger's tables as SQLAlchemy Core sees them, for reads (CRUD, lists, verification).

The schema itself is created by migration t0001 from `sql/schema.sql`; money moves only
through the SQL functions (`ledger_pg.py`). `wallets` is wallet's table: the ledger reads it
(and its functions lock and update its balance), so the columns it needs are declared here
in a metadata of their own, never migrated from this service.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Date, DateTime, Integer, MetaData, Table, Text
from sqlalchemy.dialects.postgresql import UUID

from vaultpay_transfer.adapters.metadata import metadata

__all__ = [
    "ledger_postings",
    "ledger_transactions",
    "limit_usage",
    "payouts",
    "wallet_transactions",
    "wallets",
]

_TS = DateTime(timezone=True)

ledger_transactions = Table(
    "ledger_transactions",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("reference", Text),
    Column("kind", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("created_at", _TS, nullable=False),
)

ledger_postings = Table(
    "ledger_postings",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("ledger_transaction_id", UUID(as_uuid=False), nullable=False),
    Column("account", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("created_at", _TS, nullable=False),
)

wallet_transactions = Table(
    "wallet_transactions",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("ledger_transaction_id", UUID(as_uuid=False), nullable=False),
    Column("reference", Text, nullable=False),
    Column("request_id", UUID(as_uuid=False)),
    Column("user_id", Text, nullable=False),
    Column("wallet_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("category", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("counterparty_wallet_id", Text, nullable=False),
    Column("counterparty_name", Text, nullable=False),
    Column("counterparty_description", Text, nullable=False),
    Column("note", Text, nullable=False),
    Column("original_transaction_id", UUID(as_uuid=False)),
    Column("reversed_amount", BigInteger, nullable=False),
    Column("created_at", _TS, nullable=False),
    Column("completed_at", _TS),
)

payouts = Table(
    "payouts",
    metadata,
    Column("transaction_id", UUID(as_uuid=False), primary_key=True),
    Column("wallet_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("created_at", _TS, nullable=False),
)

limit_usage = Table(
    "limit_usage",
    metadata,
    Column("wallet_id", Text, primary_key=True),
    Column("action", Text, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("used", BigInteger, nullable=False),
)

# wallet's table, read (never migrated) by the ledger.
wallets = Table(
    "wallets",
    MetaData(),
    Column("id", Text, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("balance", BigInteger, nullable=False),
)
