"""Reading the ledger back: a user's own transactions, staff listings, and the figures the
wallet service shows (limit usage, statistics).

Object-level access lives here: another user's transaction answers TRANSACTION_NOT_FOUND,
exactly like a missing one. A lookup by request id whose movement is still running answers
IDEMPOTENCY_KEY_IN_USE: NOT_FOUND there would tell a client that no money moved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from vaultpay_common.audit.model import AuditEntry, StaffViewer
from vaultpay_common.clock import Clock
from vaultpay_common.errors import FieldViolation, ValidationError
from vaultpay_common.idempotency import IdempotencyKeyInUseError
from vaultpay_common.ids import parse_uuid
from vaultpay_common.pagination import SliceOf
from vaultpay_common.text import ascii_upper
from vaultpay_transfer.domain.errors import TransactionNotFoundError, WalletNotFoundError
from vaultpay_transfer.domain.model import (
    REFERENCE_PATTERN,
    LimitUsage,
    Transaction,
    TransferStats,
    UsageFigures,
)
from vaultpay_transfer.domain.staff_reads import transactions_listed
from vaultpay_transfer.domain.validation import check_wallet_id
from vaultpay_transfer.service_layer.ports import (
    TransactionCursor,
    TransactionFilter,
    TransactionStore,
)

__all__ = ["TransactionQueries", "check_listable"]


def _found(transaction: Transaction | None) -> Transaction:
    if transaction is None:
        raise TransactionNotFoundError()
    return transaction


def check_listable(flt: TransactionFilter) -> None:
    """Refuses filters no row can match (an inverted window; a type its category never has;
    a status only a withdrawal's debit has, PENDING or FAILED, with another category or
    type: staff could otherwise walk a whole index of the table for an empty page), all in
    one refusal. The entrypoint asks it too, so that the same refusal names them with the
    request's other bad fields."""
    unmatchable: list[FieldViolation] = []
    if flt.start is not None and flt.end is not None and flt.end <= flt.start:
        unmatchable.append(FieldViolation("end_time", "must be after the start time"))
    side = None if flt.category is None else flt.category.only_type
    if flt.category is not None and side is not None and flt.type not in (None, side):
        unmatchable.append(
            FieldViolation(
                "type",
                f"must be {side.value} or unset with category {flt.category.value}"
                f" (a {flt.category.value} transaction is always a {side.value})",
            )
        )
    only_on = None if flt.status is None else flt.status.only_on
    if flt.status is not None and only_on is not None:
        category, side = only_on
        if flt.category not in (None, category) or flt.type not in (None, side):
            unmatchable.append(
                FieldViolation(
                    "status",
                    f"a {flt.status.value} transaction is always a {category.value}"
                    f" {side.value}: leave category and type unset or set them so",
                )
            )
    if unmatchable:
        raise ValidationError(unmatchable)


def _set_filters(flt: TransactionFilter) -> dict[str, str]:
    """The staff listing's filters that are set, as the audit row records them."""
    values = {
        "wallet_id": flt.wallet_id or None,
        "type": None if flt.type is None else flt.type.value,
        "category": None if flt.category is None else flt.category.value,
        "status": None if flt.status is None else flt.status.value,
        "start": None if flt.start is None else flt.start.isoformat(),
        "end": None if flt.end is None else flt.end.isoformat(),
    }
    return {name: value for name, value in values.items() if value}


class TransactionQueries:
    def __init__(
        self, store: TransactionStore, clock: Clock, movement_methods: Sequence[str] = ()
    ) -> None:
        """`movement_methods`: the methods whose keys a movement holds while it runs (the
        gRPC paths of TopUp, SendMoney and Withdraw), for `by_request_id` to tell a running
        movement from none."""
        self._store = store
        self._clock = clock
        self._movement_methods = tuple(movement_methods)

    async def get(self, user_id: str, transaction_id: str) -> Transaction:
        tx_id = parse_uuid(transaction_id, "transaction_id")
        return _found(await self._store.get(user_id, tx_id))

    async def by_reference(self, user_id: str, reference: str) -> Transaction:
        value = ascii_upper(reference)
        if not REFERENCE_PATTERN.match(value):
            raise ValidationError.single("reference_id", "must look like VP-TXN-XXXXXXXX")
        return _found(await self._store.by_reference(user_id, value))

    async def by_request_id(self, user_id: str, request_id: str, caller: str) -> Transaction:
        """The caller's side of the movement `request_id` made; while that movement is still
        running (a client asking after a reply it lost, an attempt still waiting on a lock),
        IdempotencyKeyInUseError (retry shortly), never a NOT_FOUND that reads as "no money
        moved". `caller` is whose keys the movements hold (`idempotency_caller`)."""
        rid = parse_uuid(request_id, "request_id")
        found = await self._store.by_request_id(user_id, rid)
        if found is None and self._movement_methods:
            if await self._store.movement_in_flight(caller, self._movement_methods, rid):
                raise IdempotencyKeyInUseError()
            # A movement that ended between the two reads committed before it let go of its
            # key: read again, so its commit is not answered NOT_FOUND.
            found = await self._store.by_request_id(user_id, rid)
        return _found(found)

    async def list_mine(
        self, user_id: str, flt: TransactionFilter, after: TransactionCursor | None, limit: int
    ) -> Sequence[Transaction]:
        check_listable(flt)
        return await self._store.list(replace(flt, user_id=user_id), after, limit)

    async def list_all(
        self,
        flt: TransactionFilter,
        after: TransactionCursor | None,
        limit: int,
        *,
        viewer: StaffViewer,
    ) -> SliceOf[Transaction]:
        """Staff's listing of everyone's transactions: a page of at most `limit` and whether
        more follow. Audited ("transactions.listed": the filters set, the page's transaction
        ids, the viewer and their address), committed with the read: a page is shown only
        once its audit row is written."""
        check_listable(flt)

        def audited(rows: Sequence[Transaction]) -> AuditEntry:
            shown = rows[:limit]
            return transactions_listed(
                viewer, shown, _set_filters(flt), continued=after is not None
            )

        rows = await self._store.list_audited(flt, after, limit + 1, audited)
        return SliceOf(rows[:limit], len(rows) > limit)

    async def limit_usage(self, wallet_id: str) -> LimitUsage:
        """The wallet's usage of every action (zero where none), in its currency, as of the
        database's clock: the ledger's functions count the windows by it, not by ours."""
        wallet_id = check_wallet_id(wallet_id, "wallet_id")
        currency = await self._store.wallet_currency(wallet_id)
        if currency is None:
            raise WalletNotFoundError("no such wallet")
        read_at, used = await self._store.usage(wallet_id)
        found = {u.action: u for u in used}
        actions = tuple(
            found.get(action, UsageFigures(action, 0, 0))
            for action in ("send", "withdraw", "top_up")
        )
        return LimitUsage(currency, actions, read_at)

    async def stats(self) -> TransferStats:
        return await self._store.stats(self._clock.now())
