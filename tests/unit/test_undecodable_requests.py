"""`bad_utf8_fields`: which string fields of an unparseable request are not UTF-8."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError

from vaultpay.transfer.v1 import transfer_pb2
from vaultpay.type.v1 import audit_pb2
from vaultpay.wallet.v1 import wallet_pb2
from vaultpay_common.errors import MAX_VIOLATIONS, ValidationError
from vaultpay_common.grpc import wrapping
from vaultpay_common.grpc.hygiene import RequestHygieneInterceptor, nul_violations
from vaultpay_common.grpc.undecodable import MAX_FIELDS_WALKED, bad_utf8_fields
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


def _unknown_fields_then(bad_id: bool, count: int) -> bytes:
    """`count` tiny unknown fields (field 15, varint 0), then a transaction_id that is not
    UTF-8 (or nothing): what a client can send to make the walk long."""
    tail = _spoil(transfer_pb2.GetTransactionRequest(transaction_id=BAD)) if bad_id else b""
    return b"\x78\x00" * count + tail


def test_the_walk_is_bounded_by_fields_not_only_by_what_it_finds() -> None:
    """Review of 2026-12-05: a megabyte of tiny unknown fields ending in a bad byte was walked
    whole, in Python, on the event loop, before any interceptor (0.3 s a request, 2.5 s for
    10 MiB); the bound was only the number of bad fields found."""
    descriptor = transfer_pb2.GetTransactionRequest.DESCRIPTOR
    near = _unknown_fields_then(True, MAX_FIELDS_WALKED - 10)
    assert _bad(descriptor, near) == ["transaction_id"]
    far = _unknown_fields_then(True, 500_000)
    assert _bad(descriptor, far) == []  # given up past the budget: the request is refused anyway


def test_a_corrupt_wire_format_is_refused_without_a_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    walked: list[bytes] = []

    def walk(descriptor: Descriptor, data: bytes, *, limit: int) -> list[str]:
        walked.append(data)
        return []

    monkeypatch.setattr(wrapping, "bad_utf8_fields", walk)
    parse = _tolerant(transfer_pb2.GetTransactionRequest.FromString)
    assert parse is not None
    corrupt = parse(b"\x78\x00" * 1000 + b"\x80")  # a truncated varint at the end
    assert isinstance(corrupt, UndecodableRequest) and corrupt.bad_utf8_fields == ()
    assert walked == []
    bad = parse(_spoil(transfer_pb2.GetTransactionRequest(transaction_id=BAD)))
    assert isinstance(bad, UndecodableRequest) and len(walked) == 1
