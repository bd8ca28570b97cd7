"""How transfer reads wallet's refusal of a movement's PIN check (`wallet_refusal`): the
caller's own refusals pass through with their reason and metadata; wallet's WALLET_NOT_FOUND,
which there is about the caller's own wallet, is said as transfer says it (TopUp's "you have
no wallet"), not wallet's "no such wallet", which reads like the recipient."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc.aio import AioRpcError, Metadata

from vaultpay_common.errors import ErrorKind
from vaultpay_transfer.adapters.wallet_peer import wallet_refusal
from vaultpay_transfer.domain.errors import WalletNotFoundError


def _refused(code: grpc.StatusCode, reason: str, message: str, **metadata: str) -> AioRpcError:
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.ErrorInfo(reason=reason, domain="vaultpay.wallet", metadata=metadata)
    )
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    trailers = Metadata(("grpc-status-details-bin", status.SerializeToString()))
    return AioRpcError(code, Metadata(), trailers, details=message)


def test_the_callers_missing_wallet_is_said_as_transfer_says_it() -> None:
    error = wallet_refusal(
        _refused(grpc.StatusCode.NOT_FOUND, "WALLET_NOT_FOUND", "no such wallet")
    )
    assert isinstance(error, WalletNotFoundError)
    assert (error.kind, error.reason) == (ErrorKind.NOT_FOUND, "WALLET_NOT_FOUND")
    assert error.message == "you have no wallet; create one first"


def test_a_pin_refusal_passes_through_with_its_reason_and_metadata() -> None:
    error = wallet_refusal(
        _refused(
            grpc.StatusCode.FAILED_PRECONDITION,
            "INVALID_PIN",
            "the PIN is wrong",
            remaining_attempts="2",
        )
    )
    assert (error.kind, error.reason, error.message) == (
        ErrorKind.FAILED_PRECONDITION,
        "INVALID_PIN",
        "the PIN is wrong",
    )
    assert error.metadata == {"remaining_attempts": "2"}
