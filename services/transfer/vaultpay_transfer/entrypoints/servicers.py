"""gRPC servicers of the transfer service. Each method: convert the request, await a use
case, convert the result. No SQL, no try/except, no context.abort here. A movement's key and
payment method are converted into a value or its refusal (`movement_key`,
`payment_method_from_proto`): the use case names a refusal with the request's other bad fields.

Disputes, refunds and reversals (OpenDispute, ListMyDisputes, GetDispute, AdminListDisputes,
AdminResolveDispute, AdminReverseTransaction) come in a later issue: they raise
NotImplementedError, which the error interceptor answers as UNIMPLEMENTED (reason
NOT_IMPLEMENTED), after the access check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vaultpay.transfer.v1 import transfer_pb2, transfer_pb2_grpc
from vaultpay_common.audit.model import StaffViewer
from vaultpay_common.context import CLIENT_IP
from vaultpay_common.grpc.convert import current_principal, current_staff, page_scope, timestamp
from vaultpay_common.grpc.idempotency import idempotency_caller
from vaultpay_common.grpc.servicer import ServicerContext
from vaultpay_common.pagination import PageTokens, SliceOf, paginate, uuid_cursor
from vaultpay_transfer.domain.model import Transaction
from vaultpay_transfer.domain.validation import (
    canonical_account_number,
    canonical_ifsc,
    canonical_payment_reference,
    canonical_text,
    canonical_wallet_id,
)
from vaultpay_transfer.entrypoints.convert import (
    ACTIONS,
    amount_input,
    bank_account_input,
    ledger_report_to_proto,
    money,
    movement_key,
    payment_method_from_proto,
    transaction_filter,
    transaction_to_proto,
)
from vaultpay_transfer.service_layer import commands as cmd
from vaultpay_transfer.service_layer.movements import MovementService
from vaultpay_transfer.service_layer.ports import TransactionCursor, TransactionFilter
from vaultpay_transfer.service_layer.queries import TransactionQueries
from vaultpay_transfer.service_layer.verification import LedgerVerification

__all__ = ["TransferAdminServicer", "TransferInternalServicer", "TransferServicer"]

Ctx = ServicerContext
_LATER = "disputes, refunds and reversals come in a later release"


def _cursor_of(tx: Transaction) -> Mapping[str, str | int]:
    return {"c": tx.created_at.isoformat(), "i": tx.transaction_id}


def _filters(flt: TransactionFilter) -> dict[str, object]:
    return {
        "wallet": flt.wallet_id,
        "type": flt.type,
        "category": flt.category,
        "status": flt.status,
        "start": flt.start,
        "end": flt.end,
    }


class TransferServicer(transfer_pb2_grpc.TransferServiceServicer):
    def __init__(
        self,
        movements: MovementService,
        queries: TransactionQueries,
        page_tokens: PageTokens,
        *,
        fingerprint_key: bytes,
    ) -> None:
        self._fingerprint_key = fingerprint_key
        self._moves = movements
        self._queries = queries
        self._tokens = page_tokens

    async def TopUp(
        self, request: transfer_pb2.TopUpRequest, context: Ctx
    ) -> transfer_pb2.TopUpResponse:
        tx = await self._moves.top_up(
            cmd.TopUp(
                current_principal().user_id,
                movement_key(request, canonical={"payment_reference": canonical_payment_reference}),
                amount_input(request),
                payment_method_from_proto(request.payment_method),
                request.payment_reference,
            )
        )
        return transfer_pb2.TopUpResponse(transaction=transaction_to_proto(tx))

    async def SendMoney(
        self, request: transfer_pb2.SendMoneyRequest, context: Ctx
    ) -> transfer_pb2.SendMoneyResponse:
        tx = await self._moves.send_money(
            cmd.SendMoney(
                current_principal().user_id,
                # The PIN is not part of the request a retry must match: a stored answer that
                # compared it would tell a PIN guess right or wrong without asking wallet. The
                # recipient and the note are compared as the send reads them (`vpy-ab12cd` is
                # `VPY-AB12CD`, a note's surrounding spaces are trimmed).
                movement_key(
                    request,
                    unkeyed=("pin",),
                    canonical={"recipient_wallet_id": canonical_wallet_id, "note": canonical_text},
                ),
                request.recipient_wallet_id,
                amount_input(request),
                request.note,
                request.pin,
                CLIENT_IP.get(),
            )
        )
        return transfer_pb2.SendMoneyResponse(transaction=transaction_to_proto(tx))

    async def Withdraw(
        self, request: transfer_pb2.WithdrawRequest, context: Ctx
    ) -> transfer_pb2.WithdrawResponse:
        tx = await self._moves.withdraw(
            cmd.Withdraw(
                current_principal().user_id,
                movement_key(
                    request,
                    unkeyed=("pin",),
                    canonical={
                        "bank_account.account_number": canonical_account_number,
                        "bank_account.ifsc": canonical_ifsc,
                        "bank_account.account_holder_name": canonical_text,
                    },
                    secret=("bank_account.account_number",),
                    secret_key=self._fingerprint_key,
                ),
                amount_input(request),
                bank_account_input(request),
                request.pin,
                CLIENT_IP.get(),
            )
        )
        return transfer_pb2.WithdrawResponse(transaction=transaction_to_proto(tx))

    async def GetTransaction(
        self, request: transfer_pb2.GetTransactionRequest, context: Ctx
    ) -> transfer_pb2.GetTransactionResponse:
        tx = await self._queries.get(current_principal().user_id, request.transaction_id)
        return transfer_pb2.GetTransactionResponse(transaction=transaction_to_proto(tx))

    async def GetTransactionByReference(
        self, request: transfer_pb2.GetTransactionByReferenceRequest, context: Ctx
    ) -> transfer_pb2.GetTransactionByReferenceResponse:
        tx = await self._queries.by_reference(current_principal().user_id, request.reference_id)
        return transfer_pb2.GetTransactionByReferenceResponse(transaction=transaction_to_proto(tx))

    async def GetTransactionByRequestId(
        self, request: transfer_pb2.GetTransactionByRequestIdRequest, context: Ctx
    ) -> transfer_pb2.GetTransactionByRequestIdResponse:
        tx = await self._queries.by_request_id(
            current_principal().user_id, request.request_id, idempotency_caller()
        )
        return transfer_pb2.GetTransactionByRequestIdResponse(transaction=transaction_to_proto(tx))

    async def ListTransactions(
        self, request: transfer_pb2.ListTransactionsRequest, context: Ctx
    ) -> transfer_pb2.ListTransactionsResponse:
        user_id = current_principal().user_id
        flt = transaction_filter(request)

        async def fetch(after: TransactionCursor | None, limit: int) -> Sequence[Transaction]:
            return await self._queries.list_mine(user_id, flt, after, limit)

        page = await paginate(
            self._tokens,
            page_size=request.page_size,
            page_token=request.page_token,
            scope=page_scope(),
            filters=_filters(flt),
            fetch=fetch,
            cursor_of=_cursor_of,
            parse=uuid_cursor,
        )
        return transfer_pb2.ListTransactionsResponse(
            transactions=[transaction_to_proto(t) for t in page.items],
            next_page_token=page.next_page_token,
        )

    # ----- disputes: a later issue -------------------------------------------------------

    async def OpenDispute(
        self, request: transfer_pb2.OpenDisputeRequest, context: Ctx
    ) -> transfer_pb2.OpenDisputeResponse:
        raise NotImplementedError(_LATER)

    async def ListMyDisputes(
        self, request: transfer_pb2.ListMyDisputesRequest, context: Ctx
    ) -> transfer_pb2.ListMyDisputesResponse:
        raise NotImplementedError(_LATER)

    async def GetDispute(
        self, request: transfer_pb2.GetDisputeRequest, context: Ctx
    ) -> transfer_pb2.GetDisputeResponse:
        raise NotImplementedError(_LATER)


class TransferAdminServicer(transfer_pb2_grpc.TransferAdminServiceServicer):
    def __init__(
        self,
        queries: TransactionQueries,
        verification: LedgerVerification,
        page_tokens: PageTokens,
    ) -> None:
        self._queries = queries
        self._verification = verification
        self._tokens = page_tokens

    async def AdminListTransactions(
        self, request: transfer_pb2.AdminListTransactionsRequest, context: Ctx
    ) -> transfer_pb2.AdminListTransactionsResponse:
        flt = transaction_filter(request)
        viewer = StaffViewer(*current_staff(), CLIENT_IP.get())

        async def fetch_slice(after: TransactionCursor | None, limit: int) -> SliceOf[Transaction]:
            return await self._queries.list_all(flt, after, limit, viewer=viewer)

        page = await paginate(
            self._tokens,
            page_size=request.page_size,
            page_token=request.page_token,
            scope=page_scope(),
            filters=_filters(flt),
            fetch_slice=fetch_slice,
            cursor_of=_cursor_of,
            parse=uuid_cursor,
        )
        return transfer_pb2.AdminListTransactionsResponse(
            transactions=[transaction_to_proto(t) for t in page.items],
            next_page_token=page.next_page_token,
        )

    async def AdminListDisputes(
        self, request: transfer_pb2.AdminListDisputesRequest, context: Ctx
    ) -> transfer_pb2.AdminListDisputesResponse:
        raise NotImplementedError(_LATER)

    async def AdminResolveDispute(
        self, request: transfer_pb2.AdminResolveDisputeRequest, context: Ctx
    ) -> transfer_pb2.AdminResolveDisputeResponse:
        raise NotImplementedError(_LATER)

    async def AdminReverseTransaction(
        self, request: transfer_pb2.AdminReverseTransactionRequest, context: Ctx
    ) -> transfer_pb2.AdminReverseTransactionResponse:
        raise NotImplementedError(_LATER)

    async def AdminVerifyLedger(
        self, request: transfer_pb2.AdminVerifyLedgerRequest, context: Ctx
    ) -> transfer_pb2.AdminVerifyLedgerResponse:
        answer = await self._verification.answer(VERIFY_ANSWER_WITHIN_SECONDS)
        reply = ledger_report_to_proto(answer.report)
        for check in reply.checks:
            check.not_run = check.name in answer.not_run
        return reply


# What AdminVerifyLedger answers within when its caller sent no deadline: a JSON call through
# the gateway carries none, and the gateway ends a unary call at 15 s (a 504, whose retries ran
# every full scan again on the primary). The checks the time did not reach are answered not run.
VERIFY_ANSWER_WITHIN_SECONDS = 12.0


class TransferInternalServicer(transfer_pb2_grpc.TransferInternalServiceServicer):
    def __init__(self, queries: TransactionQueries) -> None:
        self._queries = queries

    async def GetLimitUsage(
        self, request: transfer_pb2.GetLimitUsageRequest, context: Ctx
    ) -> transfer_pb2.GetLimitUsageResponse:
        usage = await self._queries.limit_usage(request.wallet_id)
        reply = transfer_pb2.GetLimitUsageResponse(read_time=timestamp(usage.read_at))
        for figures in usage.actions:
            reply.usage.add(
                action=ACTIONS[figures.action],
                daily_used=money(figures.daily_used_minor, usage.currency),
                monthly_used=money(figures.monthly_used_minor, usage.currency),
            )
        return reply

    async def GetTransferStats(
        self, request: transfer_pb2.GetTransferStatsRequest, context: Ctx
    ) -> transfer_pb2.GetTransferStatsResponse:
        stats = await self._queries.stats()
        return transfer_pb2.GetTransferStatsResponse(
            daily_transaction_count=stats.daily_count,
            daily_volumes=[money(amount, cur) for cur, amount in stats.daily_volumes],
            monthly_transaction_count=stats.monthly_count,
            monthly_volumes=[money(amount, cur) for cur, amount in stats.monthly_volumes],
            open_dispute_count=stats.open_disputes,
            compute_time=timestamp(stats.computed_at),
        )
