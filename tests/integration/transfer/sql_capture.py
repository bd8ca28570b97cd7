"""The last statement an engine sends, for tests that explain it again (plans, buffers).

with CapturedStatement(ledger.engine) as captured:
    await store.list(...)
await conn.execute(f"PREPARE listing AS {captured.statement}")   # typed as the engine sent it
plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {execute_prepared('listing', captured.parameters)}")
plan_scans(plan)                                                 # [(node type, index or table)]
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import asyncpg
from sqlalchemy import event as sqlalchemy_events
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["CapturedStatement", "execute_prepared", "plan_scans", "prepared_plan_scans"]


class CapturedStatement:
    """The last statement (and its parameters) the engine sends while the block runs."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine.sync_engine
        self.statement = ""
        self.parameters: Any = ()

    def _on_execute(self, conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        self.statement, self.parameters = statement, parameters

    def __enter__(self) -> CapturedStatement:
        sqlalchemy_events.listen(self._engine, "before_cursor_execute", self._on_execute)
        return self

    def __exit__(self, *_: object) -> None:
        sqlalchemy_events.remove(self._engine, "before_cursor_execute", self._on_execute)


def execute_prepared(name: str, parameters: Any) -> str:
    """EXECUTE of the prepared statement `name` with `parameters` as literals (EXECUTE takes no
    bind parameters); each is coerced to the type the statement declares for it."""
    if not parameters:
        return f"EXECUTE {name}"
    literals = [
        str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"
        for value in parameters
    ]
    return f"EXECUTE {name}({', '.join(literals)})"


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def plan_scans(document: Any) -> list[tuple[str, str]]:
    """(node type, index or relation) of every scan of an EXPLAIN (FORMAT JSON) plan."""
    root = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
    return [
        (node["Node Type"], node.get("Index Name") or node.get("Relation Name", ""))
        for node in _nodes(root)
        if "Scan" in node["Node Type"]
    ]


def plan_index_conditions(document: Any) -> dict[str, str]:
    """Index name -> its Index Cond ("" for none: the scan walks the whole index, filtering)
    of every index scan of an EXPLAIN (FORMAT JSON) plan."""
    root = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
    return {
        node["Index Name"]: node.get("Index Cond", "")
        for node in _nodes(root)
        if node.get("Index Name")
    }


async def _prepared_explains(dsn: str, name: str, captured: CapturedStatement) -> dict[str, Any]:
    """EXPLAIN (FORMAT JSON) of the generic and of the custom plan of the captured statement,
    prepared as `name` on a connection of `dsn` (the role the service prepares it as)."""
    execute = execute_prepared(name, captured.parameters)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"PREPARE {name} AS {captured.statement}")
        explains = {}
        for mode in ("force_generic_plan", "force_custom_plan"):
            await conn.execute(f"SET plan_cache_mode = {mode}")
            explains[mode] = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {execute}")
    finally:
        await conn.close()
    return explains


async def prepared_plan_scans(
    dsn: str, name: str, captured: CapturedStatement
) -> dict[str, list[tuple[str, str]]]:
    """The scans of the generic and of the custom plan of the captured statement, prepared
    as `name` on a connection of `dsn` (the role the service prepares it as)."""
    explains = await _prepared_explains(dsn, name, captured)
    return {mode: plan_scans(document) for mode, document in explains.items()}


async def prepared_plan_index_conditions(
    dsn: str, name: str, captured: CapturedStatement
) -> dict[str, dict[str, str]]:
    """`plan_index_conditions` of the generic and of the custom plan (see prepared_plan_scans)."""
    explains = await _prepared_explains(dsn, name, captured)
    return {mode: plan_index_conditions(document) for mode, document in explains.items()}
