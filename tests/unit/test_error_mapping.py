import grpc
from google.rpc import error_details_pb2

from vaultpay_common.errors import FieldViolation, NotFoundError, RateLimitedError, ValidationError
from vaultpay_common.grpc.errors import status_for


class WalletNotFoundError(NotFoundError):
    reason = "WALLET_NOT_FOUND"


def _detail(status: object, message_type: type) -> object:
    for any_detail in status.details:  # type: ignore[attr-defined]
        if any_detail.Is(message_type.DESCRIPTOR):  # type: ignore[attr-defined]
            out = message_type()
            any_detail.Unpack(out)
            return out
    raise AssertionError(f"no {message_type.__name__} detail")


def test_domain_error_maps_by_class_to_code_and_reason() -> None:
    code, status = status_for(WalletNotFoundError(), "vaultpay.wallet")
    assert code is grpc.StatusCode.NOT_FOUND
    info = _detail(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("WALLET_NOT_FOUND", "vaultpay.wallet")  # type: ignore[attr-defined]


def test_validation_error_carries_every_field_violation() -> None:
    error = ValidationError([FieldViolation("email", "bad"), FieldViolation("password", "weak")])
    code, status = status_for(error, "vaultpay.auth")
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    bad_request = _detail(status, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["email", "password"]  # type: ignore[attr-defined]


def test_rate_limit_carries_retry_info() -> None:
    code, status = status_for(RateLimitedError(retry_after_seconds=42), "vaultpay.auth")
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = _detail(status, error_details_pb2.RetryInfo)
    assert retry.retry_delay.seconds == 42  # type: ignore[attr-defined]


def test_a_nested_messages_violations_are_named_inside_it() -> None:
    refused = ValidationError(
        [FieldViolation("request_id", "must be a UUID"), FieldViolation("pin", "is required")]
    ).within("metadata")
    assert [(v.field, v.description) for v in refused.violations] == [
        ("metadata.request_id", "must be a UUID"),
        ("metadata.pin", "is required"),
    ]
    assert "metadata.request_id: must be a UUID" in refused.message
