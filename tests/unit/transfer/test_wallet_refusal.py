"""How transfer reads wallet's refusal of a movement's PIN check (`wallet_refusal`): the
caller's own refusals pass through with their reason and metadata; wallet's WALLET_NOT_FOUND,
which there is about the caller's own wallet, is said as transfer says it (TopUp's "you have
no wallet"), not wallet's "no such wallet", which reads like the recipient."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc.aio import AioRpcError, Metadata

from vaultpay_common.errors import DomainError, ErrorKind, ValidationError
from vaultpay_transfer.adapters.wallet_peer import WalletRefusedOurRequestError, wallet_refusal
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
    assert isinstance(error, DomainError)
    assert (error.kind, error.reason, error.message) == (
        ErrorKind.FAILED_PRECONDITION,
        "INVALID_PIN",
        "the PIN is wrong",
    )
    assert error.metadata == {"remaining_attempts": "2"}


def _invalid(*fields: str) -> AioRpcError:
    code = grpc.StatusCode.INVALID_ARGUMENT
    info, bad = any_pb2.Any(), any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="INVALID_ARGUMENT", domain="vaultpay.wallet"))
    bad.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description="is wrong")
                for f in fields
            ]
        )
    )
    details = [info, bad] if fields else [info]
    status = status_pb2.Status(code=code.value[0], message="invalid request", details=details)
    trailers = Metadata(("grpc-status-details-bin", status.SerializeToString()))
    return AioRpcError(code, Metadata(), trailers, details="invalid request")


def test_a_bad_pin_is_the_clients_own_invalid_argument() -> None:
    error = wallet_refusal(_invalid("pin"))
    assert isinstance(error, ValidationError)
    assert [v.field for v in error.violations] == ["pin"]


@pytest.mark.parametrize("fields", [("client_ip",), ("user_id",), ("pin", "request_id"), ()])
def test_wallet_refusing_what_transfer_sent_is_internal_not_the_clients_field(
    fields: tuple[str, ...], caplog: pytest.LogCaptureFixture
) -> None:
    """wallet's fields other than `pin` are not in SendMoney or Withdraw: a client told to fix
    `clientIp` could not (review of 2026-12-04); nor is a violation-less refusal about `pin`."""
    error = wallet_refusal(_invalid(*fields))
    assert isinstance(error, WalletRefusedOurRequestError)
    assert not isinstance(error, DomainError)  # the interceptor answers INTERNAL
    assert "wallet refused transfer's PIN check as invalid" in caplog.text


def test_wallets_retry_delay_passes_through() -> None:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason="RATE_LIMITED", domain="vaultpay.wallet"))
    retry = any_pb2.Any()
    retry.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=6, nanos=1)))
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    status = status_pb2.Status(code=code.value[0], message="slow down", details=[detail, retry])
    trailers = Metadata(("grpc-status-details-bin", status.SerializeToString()))
    error = wallet_refusal(AioRpcError(code, Metadata(), trailers, details="slow down"))
    assert isinstance(error, DomainError)
    assert (error.kind, error.reason, error.retry_after_seconds) == (
        ErrorKind.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        7,
    )
