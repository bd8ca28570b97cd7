"""`bad_utf8_fields`: which string fields of an unparseable request are not UTF-8."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError

from vaultpay.transfer.v1 import transfer_pb2
from vaultpay.type.v1 import audit_pb2
from vaultpay.wallet.v1 import wallet_pb2
from vaultpay_common.errors import MAX_VIOLATIONS, ValidationError
from vaultpay_common.grpc.hygiene import RequestHygieneInterceptor, nul_violations
from vaultpay_common.grpc.undecodable import bad_utf8_fields
from vaultpay_common.grpc.wrapping import UndecodableRequest, _tolerant

BAD = "\x01\x02bad\x03"  # serialised, then its bytes swapped for invalid UTF-8


def _bad(descriptor: Descriptor, data: bytes) -> list[str]:
    return bad_utf8_fields(descriptor, data, limit=MAX_VIOLATIONS + 1)


def _spoil(message: object) -> bytes:
    data: bytes = message.SerializeToString()  # type: ignore[attr-defined]
    assert BAD.encode() in data
    spoiled = b"\xff\xfebad\x80"
    assert len(spoiled) == len(BAD.encode())  # the fields' lengths stay right
    return data.replace(BAD.encode(), spoiled)


def test_a_top_level_string_is_named() -> None:
    data = _spoil(transfer_pb2.GetTransactionRequest(transaction_id=BAD))
    with pytest.raises(DecodeError, match="UTF-8"):
        transfer_pb2.GetTransactionRequest.FromString(data)
    assert _bad(transfer_pb2.GetTransactionRequest.DESCRIPTOR, data) == ["transaction_id"]


def test_nested_and_repeated_strings_are_named_with_their_path() -> None:
    request = transfer_pb2.SendMoneyRequest(
        recipient_wallet_id="VPY-OK", note=BAD, request_id="r", pin="1234"
    )
    request.amount.currency_code = "INR"
    data = _spoil(request)
    assert _bad(transfer_pb2.SendMoneyRequest.DESCRIPTOR, data) == ["note"]
    money = transfer_pb2.SendMoneyRequest(recipient_wallet_id="VPY-OK")
    money.amount.currency_code = BAD
    assert _bad(transfer_pb2.SendMoneyRequest.DESCRIPTOR, _spoil(money)) == ["amount.currency_code"]


def test_a_repeated_string_is_named_by_index() -> None:
    request = wallet_pb2.CreateNotificationsRequest()
    request.notifications.add(title="fine")
    request.notifications.add(title=BAD)
    data = _spoil(request)
    assert _bad(wallet_pb2.CreateNotificationsRequest.DESCRIPTOR, data) == [
        "notifications[1].title"
    ]


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x0a", b"\x0b\x01", b"\x80"])
def test_malformed_bytes_name_nothing(data: bytes) -> None:
    assert _bad(transfer_pb2.GetTransactionRequest.DESCRIPTOR, data) == []


def test_valid_bytes_name_nothing() -> None:
    data = transfer_pb2.GetTransactionRequest(transaction_id="ok").SerializeToString()
    assert _bad(transfer_pb2.GetTransactionRequest.DESCRIPTOR, data) == []


def _many_bad_titles(count: int) -> bytes:
    request = wallet_pb2.CreateNotificationsRequest()
    for _ in range(count):
        request.notifications.add(title=BAD)
    return _spoil(request)


def test_the_walk_stops_at_its_limit_however_many_values_are_bad() -> None:
    data = _many_bad_titles(5_000)
    found = _bad(wallet_pb2.CreateNotificationsRequest.DESCRIPTOR, data)
    assert found == [f"notifications[{i}].title" for i in range(MAX_VIOLATIONS + 1)]


def test_the_servers_deserializer_names_the_fields_and_the_refusal_is_bounded() -> None:
    """The wiring: a method's deserializer, as the server kit wraps it, hands the hygiene check
    the bad fields, and the refusal carries MAX_VIOLATIONS of them and says there were more."""
    parse = _tolerant(wallet_pb2.CreateNotificationsRequest.FromString)
    assert parse is not None
    request = parse(_many_bad_titles(5_000))
    assert isinstance(request, UndecodableRequest)
    with pytest.raises(ValidationError) as refused:
        RequestHygieneInterceptor().check_request("/m", request)
    fields = [v.field for v in refused.value.violations]
    assert fields == [f"notifications[{i}].title" for i in range(MAX_VIOLATIONS)]
    assert refused.value.message.endswith("; and more")
    assert len(refused.value.message) < 2_000


def test_a_nul_in_a_map_is_named_by_the_start_of_its_key() -> None:
    long_key = "k" * 5_000
    event = audit_pb2.AuditEvent()
    event.details[long_key] = "a\x00b"
    [violation] = nul_violations(event)
    assert violation.field.startswith("details['kkk") and violation.field.endswith("...]")
    assert len(violation.field) < 80
