"""A fake unit of work (cosmicpython's FakeUnitOfWork) that really rolls back.

Subclasses hold their fake repositories as attributes and list them in `_state_holders`;
the base snapshots them on `__aenter__` and restores the snapshot when the block ends without
`commit()`, so a test can assert that a refused command "writes nothing".

    class FakeWalletUnitOfWork(FakeUnitOfWork):
        def __init__(self) -> None:
            super().__init__()
            self.wallets = FakeWalletRepository()

        def _state_holders(self) -> list[object]:
            return [self.wallets]
"""

from __future__ import annotations

import copy
from types import TracebackType
from typing import Any, Self

from vaultpay_common.audit import AuditEntry

__all__ = ["FakeUnitOfWork"]


class FakeUnitOfWork:
    def __init__(self) -> None:
        self.audit_entries: list[AuditEntry] = []
        self.commits = 0
        self._committed = False
        self._snapshot: list[dict[str, Any]] | None = None

    def _state_holders(self) -> list[object]:
        """The objects whose attributes are this unit's state (fake repositories)."""
        return []

    def _holders(self) -> list[object]:
        return [self, *self._state_holders()]

    def _capture(self) -> list[dict[str, Any]]:
        # A holder's state is copied once, in place: the unit keeps its repositories (tests
        # may hold references to them), only their contents roll back.
        holders = self._holders()
        nested = {id(h) for h in holders[1:]}
        return [
            {
                k: copy.deepcopy(v)
                for k, v in vars(h).items()
                if not k.startswith("_") and id(v) not in nested
            }
            for h in holders
        ]

    async def __aenter__(self) -> Self:
        self._committed = False
        self._snapshot = self._capture()
        return self

    async def commit(self) -> None:
        self._committed = True
        self.commits += 1
        self._snapshot = self._capture()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._snapshot is not None:
            for holder, saved in zip(self._holders(), self._snapshot, strict=True):
                for key, value in saved.items():
                    if key != "commits":
                        setattr(holder, key, value)
        self._snapshot = None

    async def audit(self, entry: AuditEntry) -> None:
        self.audit_entries.append(entry)
