"""Alembic for every service: one env, parameterised by metadata, and named migration chains.

A database can hold several chains, each with its own version table: the shared `vaultpay`
database has the platform's (audit, outbox, idempotency records) plus one per service that owns
tables there. A service's `migrate` command upgrades its chains in order:

    upgrade_all([PLATFORM_CHAIN, WALLET_CHAIN], owner_url, app_role)

and each chain's `env.py` is two lines:

    from vaultpay_common.migrations import run_env
    run_env(metadata)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

__all__ = ["PLATFORM_CHAIN", "MigrationChain", "migrate_chain", "run_env", "upgrade_all"]

# Held while migrating, so two services migrating one database at once take turns.
_MIGRATION_LOCK = 0x4D494752  # "MIGR"


@dataclass(frozen=True, slots=True)
class MigrationChain:
    """One Alembic history: where its scripts are and which table records its head."""

    name: str
    script_location: Path
    version_table: str = "alembic_version"


PLATFORM_CHAIN = MigrationChain(
    "platform", Path(__file__).parent / "platform_migrations", "alembic_version_platform"
)


def migrate_chain(
    chain: MigrationChain,
    url: str,
    app_role: str,
    *,
    action: Literal["upgrade", "downgrade"] = "upgrade",
    revision: str = "head",
) -> None:
    """Runs one chain's migrations (`action`) to `revision`, as the table owner (`url`).

    Synchronous, and Alembic runs an event loop of its own: from async code, call it in a
    thread (`asyncio.to_thread`)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(chain.script_location))
    config.attributes.update(database_url=url, app_role=app_role, version_table=chain.version_table)
    if action == "upgrade":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)


def upgrade_all(chains: Sequence[MigrationChain], url: str, app_role: str) -> None:
    """Upgrades each chain to its head, in order, as the table owner (`url`)."""
    for chain in chains:
        migrate_chain(chain, url, app_role)


def run_env(metadata: MetaData) -> None:
    """The body of a chain's env.py: online migrations on an async engine."""
    from alembic import context

    config = context.config
    if context.is_offline_mode():
        raise SystemExit("offline migrations are not supported; run the service's `migrate`")

    def migrate(connection: Connection) -> None:
        connection.execute(text(f"SELECT pg_advisory_lock({_MIGRATION_LOCK})"))
        try:
            context.configure(
                connection=connection,
                target_metadata=metadata,
                transaction_per_migration=True,
                version_table=config.attributes.get("version_table", "alembic_version"),
            )
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.execute(text(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK})"))

    async def run() -> None:
        engine = create_async_engine(config.attributes["database_url"])
        try:
            async with engine.connect() as connection:
                await connection.run_sync(migrate)
                await connection.commit()
        finally:
            await engine.dispose()

    asyncio.run(run())
