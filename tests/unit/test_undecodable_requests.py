"""`bad_utf8_fields`: which string fields of an unparseable request are not UTF-8."""

from __future__ import annotations

import pytest

from vaultpay.transfer.v1 import transfer_pb2
from vaultpay.wallet.v1 import wallet_pb2
from vaultpay_common.grpc.undecodable import bad_utf8_fields

BAD = "\x01\x02bad\x03"  # serialised, then its bytes swapped for invalid UTF-8


def _spoil(message: object) -> bytes:
    data: bytes = message.SerializeToString()  # type: ignore[attr-defined]
    assert BAD.encode() in data
    return data.replace(BAD.encode(), b"\xff\xfe\xc3bad\x80")


def test_a_top_level_string_is_named() -> None:
    data = _spoil(transfer_pb2.GetTransactionRequest(transaction_id=BAD))
    with pytest.raises(Exception, match="UTF-8"):
        transfer_pb2.GetTransactionRequest.FromString(data)
    assert bad_utf8_fields(transfer_pb2.GetTransactionRequest.DESCRIPTOR, data) == [
        "transaction_id"
    ]


def test_nested_and_repeated_strings_are_named_with_their_path() -> None:
    request = transfer_pb2.SendMoneyRequest(
        recipient_wallet_id="VPY-OK", note=BAD, request_id="r", pin="1234"
    )
    request.amount.currency_code = "INR"
    data = _spoil(request)
    assert bad_utf8_fields(transfer_pb2.SendMoneyRequest.DESCRIPTOR, data) == ["note"]
    money = transfer_pb2.SendMoneyRequest(recipient_wallet_id="VPY-OK")
    money.amount.currency_code = BAD
    assert bad_utf8_fields(transfer_pb2.SendMoneyRequest.DESCRIPTOR, _spoil(money)) == [
        "amount.currency_code"
    ]


def test_a_repeated_string_is_named_by_index() -> None:
    request = wallet_pb2.CreateNotificationsRequest()
    request.notifications.add(title="fine")
    request.notifications.add(title=BAD)
    data = _spoil(request)
    assert bad_utf8_fields(wallet_pb2.CreateNotificationsRequest.DESCRIPTOR, data) == [
        "notifications[1].title"
    ]


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x0a", b"\x0b\x01", b"\x80"])
def test_malformed_bytes_name_nothing(data: bytes) -> None:
    assert bad_utf8_fields(transfer_pb2.GetTransactionRequest.DESCRIPTOR, data) == []


def test_valid_bytes_name_nothing() -> None:
    data = transfer_pb2.GetTransactionRequest(transaction_id="ok").SerializeToString()
    assert bad_utf8_fields(transfer_pb2.GetTransactionRequest.DESCRIPTOR, data) == []
