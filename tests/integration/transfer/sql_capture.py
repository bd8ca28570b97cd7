"""The last statement an engine sends, for tests that explain it again (plans, buffers).

with CapturedStatement(ledger.engine) as captured:
    await store.list(...)
captured.statement, captured.parameters
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event as sqlalchemy_events
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["CapturedStatement"]


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
