"""Migrations of one database take turns: a `migrate` that finds the turn taken waits, says so
once with the holder's backend pid, and goes on when the turn is given back."""

from __future__ import annotations

import asyncio
import os
import sys

from tests.integration.transfer.conftest import LedgerWorld
from tests.support import eventually
from vaultpay_common.migrations import _MIGRATION_LOCK

WAITING = "waiting for another migration of this database"


async def test_a_migration_waits_its_turn_and_names_who_holds_it(ledger: LedgerWorld) -> None:
    holder = await ledger.owner()
    migrate: asyncio.subprocess.Process | None = None
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        holder_pid = await holder.fetchval("SELECT pg_backend_pid()")
        migrate = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "vaultpay_transfer.entrypoints.cli",
            "migrate",
            env={**os.environ, **ledger.env},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        stderr = migrate.stderr
        assert stderr is not None
        said: list[str] = []

        async def read_line() -> str | None:
            try:
                line = (await asyncio.wait_for(stderr.readline(), timeout=0.5)).decode()
            except TimeoutError:
                return None  # nothing said yet: asked again until the deadline
            said.append(line)
            return line if WAITING in line or not line else None

        line = await eventually(read_line, within=60, what="the migration saying it waits")
        assert f"backend pid {holder_pid}" in line, said
        assert migrate.returncode is None  # still waiting for its turn

        await holder.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        _, rest = await asyncio.wait_for(migrate.communicate(), timeout=120)
        assert migrate.returncode == 0, "".join(said) + rest.decode()
        assert WAITING not in rest.decode()  # said once
    finally:
        if migrate is not None and migrate.returncode is None:
            migrate.kill()
            await migrate.wait()
        await holder.close()
