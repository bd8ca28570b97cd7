"""Idempotency keys built from requests (grpc/idempotency.py), and which fields each money and
PIN RPC keeps out of its stored fingerprint or keys into it (security review of 2026-12-03:
a SendMoney replay that compared the PIN told a PIN guess right or wrong without asking
wallet; fingerprints of PINs and account numbers were reversible by enumeration)."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from vaultpay.kyc.v1 import kyc_pb2
from vaultpay.transfer.v1 import transfer_pb2
from vaultpay.type.v1 import kyc_tier_pb2, money_pb2
from vaultpay.wallet.v1 import wallet_pb2
from vaultpay_common.context import METHOD, PRINCIPAL, Principal, Role
from vaultpay_common.grpc.idempotency import idempotency_key
from vaultpay_common.idempotency import IdempotencyKey, request_fingerprint
from vaultpay_common.pagination import PageTokens
from vaultpay_kyc.entrypoints.servicers import KycAdminServicer, KycServicer
from vaultpay_transfer.entrypoints.servicers import TransferServicer
from vaultpay_wallet.entrypoints.servicers import WalletServicer
from vaultpay_wallet.entrypoints.servicers_staff import WalletAdminServicer, WalletInternalServicer

M = TypeVar("M", bound=Message)
USER = "0b5f7c1e-8a3d-4f2b-9c6e-1d2a3b4c5d6e"
KEY = b"fingerprint-key-of-this-test-32b"
PIN = "7391"


@pytest.fixture(autouse=True)
def _a_caller() -> Iterator[None]:
    principal = PRINCIPAL.set(Principal(subject=USER, role=Role.USER))
    method = METHOD.set("/vaultpay.test.v1.Test/Call")
    yield
    PRINCIPAL.reset(principal)
    METHOD.reset(method)


def _bare_fingerprint(request: Message, **changes: Any) -> str:
    """The fingerprint as an unkeyed SHA-256 of the request, as before the review."""
    bare = type(request)()
    bare.CopyFrom(request)
    bare.ClearField("request_id")
    for name, value in changes.items():
        setattr(bare, name, value)
    return request_fingerprint(bare.SerializeToString(deterministic=True))


def _send(pin: str = PIN, amount: int = 600) -> transfer_pb2.SendMoneyRequest:
    return transfer_pb2.SendMoneyRequest(
        request_id=str(uuid.uuid4()),
        recipient_wallet_id="VPY-AB12CD",
        amount=money_pb2.Money(currency_code="INR", amount_minor=amount),
        note="rent",
        pin=pin,
    )


def test_an_unkeyed_field_is_not_compared_and_the_rest_is() -> None:
    request = _send()

    def fingerprint(r: Message) -> str:
        key = idempotency_key(r, unkeyed=("pin",))
        assert key is not None
        return key.fingerprint

    assert fingerprint(request) == fingerprint(_send(pin="0000"))
    assert fingerprint(request) != fingerprint(_send(amount=601))


def test_a_secret_field_cannot_be_read_back_from_its_fingerprint_without_the_key() -> None:
    request = wallet_pb2.VerifyPinRequest(request_id=str(uuid.uuid4()), pin=PIN)
    key = idempotency_key(request, secret=("pin",), secret_key=KEY)
    assert key is not None

    every_pin = [f"{n:04d}" for n in range(10_000)]
    # Whoever reads idempotency_records tries every PIN: with a bare hash the PIN falls out...
    unkeyed = _bare_fingerprint(request)
    assert [p for p in every_pin if _bare_fingerprint(request, pin=p) == unkeyed] == [PIN]
    # ...with the keyed one, nothing does, and only the key finds it again.
    assert not [p for p in every_pin if _bare_fingerprint(request, pin=p) == key.fingerprint]
    keyed = hmac.new(KEY, PIN.encode(), hashlib.sha256).hexdigest()
    assert _bare_fingerprint(request, pin=keyed) == key.fingerprint


def test_a_secret_field_still_tells_requests_apart_and_a_nested_one_is_found() -> None:
    def withdrawal(account: str) -> transfer_pb2.WithdrawRequest:
        request = transfer_pb2.WithdrawRequest(request_id=str(uuid.uuid4()), pin=PIN)
        request.bank_account.account_number = account
        request.bank_account.ifsc = "HDFC0001234"
        return request

    def fingerprint(request: Message) -> str:
        key = idempotency_key(request, secret=("bank_account.account_number",), secret_key=KEY)
        assert key is not None
        return key.fingerprint

    assert fingerprint(withdrawal("123456789012")) == fingerprint(withdrawal("123456789012"))
    assert fingerprint(withdrawal("123456789012")) != fingerprint(withdrawal("123456789013"))
    assert fingerprint(withdrawal("123456789012")) != _bare_fingerprint(withdrawal("123456789012"))


def test_secret_fields_without_a_key_of_32_bytes_are_a_programming_error() -> None:
    request = wallet_pb2.VerifyPinRequest(request_id=str(uuid.uuid4()), pin=PIN)
    with pytest.raises(ValueError, match="fingerprint key"):
        idempotency_key(request, secret=("pin",))
    with pytest.raises(ValueError, match="fingerprint key"):
        idempotency_key(request, secret=("pin",), secret_key=b"short")


# --- which RPC keeps what out of its fingerprint --------------------------------------------


class _Capture:
    """Stands in for a use-case service: records the command it is given, then stops."""

    def __init__(self) -> None:
        self.commands: list[Any] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        async def record(command: Any, *rest: Any) -> Any:
            self.commands.append(command)
            raise _StoppedError

        return record


class _StoppedError(Exception):
    pass


def _key_of(call: Callable[[_Capture], Any]) -> IdempotencyKey:
    """The idempotency key a servicer method hands its use case."""
    capture = _Capture()
    with pytest.raises(_StoppedError):
        call(capture).send(None)
    [command] = capture.commands
    values = [getattr(command, f.name) for f in dataclasses.fields(command)]
    [key] = [v for v in values if isinstance(v, IdempotencyKey)]
    return key


TOKENS = PageTokens(b"k" * 32)
_ANY: Any = None


def _transfer(capture: _Capture) -> TransferServicer:
    return TransferServicer(capture, _ANY, TOKENS, fingerprint_key=KEY)  # type: ignore[arg-type]


def _wallet(capture: _Capture) -> WalletServicer:
    c: Any = capture
    return WalletServicer(_ANY, c, _ANY, _ANY, _ANY, TOKENS, fingerprint_key=KEY)


def _wallet_internal(capture: _Capture) -> WalletInternalServicer:
    c: Any = capture
    return WalletInternalServicer(c, _ANY, _ANY, _ANY, _ANY, fingerprint_key=KEY)


def _kyc(capture: _Capture) -> KycServicer:
    c: Any = capture
    return KycServicer(c, upload_drain_limit_bytes=1, fingerprint_key=KEY)


def _same_id(request: M, **changes: Any) -> M:
    other = type(request)()
    other.CopyFrom(request)
    for name, value in changes.items():
        setattr(other, name, value)
    return other


def test_send_money_and_withdraw_replay_whatever_pin_a_retry_carries() -> None:
    sent = _send()
    first = _key_of(lambda c: _transfer(c).SendMoney(sent, _ANY))
    guess = _key_of(lambda c: _transfer(c).SendMoney(_same_id(sent, pin="0000"), _ANY))
    assert first == guess  # a guess is answered as the retry it is: no oracle on the PIN
    more = _same_id(sent)
    more.amount.amount_minor += 1
    assert _key_of(lambda c: _transfer(c).SendMoney(more, _ANY)) != first

    withdrawal = transfer_pb2.WithdrawRequest(request_id=str(uuid.uuid4()), pin=PIN)
    withdrawal.bank_account.account_number = "123456789012"
    key = _key_of(lambda c: _transfer(c).Withdraw(withdrawal, _ANY))
    assert key == _key_of(lambda c: _transfer(c).Withdraw(_same_id(withdrawal, pin="0"), _ANY))
    bare = _same_id(withdrawal, pin="")
    assert key.fingerprint != _bare_fingerprint(bare)  # the account number is keyed


@pytest.mark.parametrize(
    ("call", "request_", "secret"),
    [
        (
            lambda s, r: _wallet(s).SetPin(r, _ANY),
            wallet_pb2.SetPinRequest(pin=PIN, pin_confirmation=PIN),
            ("pin", "pin_confirmation"),
        ),
        (
            lambda s, r: _wallet(s).VerifyPin(r, _ANY),
            wallet_pb2.VerifyPinRequest(pin=PIN),
            ("pin",),
        ),
        (
            lambda s, r: _wallet(s).ChangePin(r, _ANY),
            wallet_pb2.ChangePinRequest(
                current_pin=PIN, new_pin="2468", new_pin_confirmation="2468"
            ),
            ("current_pin", "new_pin", "new_pin_confirmation"),
        ),
        (
            lambda s, r: _wallet(s).ResetPin(r, _ANY),
            wallet_pb2.ResetPinRequest(token="t" * 43, new_pin="2468", new_pin_confirmation="2468"),
            ("new_pin", "new_pin_confirmation"),
        ),
        (
            lambda s, r: _wallet_internal(s).VerifyTransferPin(r, _ANY),
            wallet_pb2.VerifyTransferPinRequest(user_id=USER, pin=PIN, client_ip="203.0.113.7"),
            ("pin",),
        ),
        (
            lambda s, r: _kyc(s).SubmitKyc(r, _ANY),
            kyc_pb2.SubmitKycRequest(
                document_type=kyc_pb2.DOCUMENT_TYPE_PAN,
                document_number="ABCDE1234F",
                document_file=b"%PDF",
            ),
            ("document_number",),
        ),
    ],
)
def test_pins_and_document_numbers_enter_stored_fingerprints_keyed(
    call: Callable[[_Capture, Message], Any], request_: Message, secret: tuple[str, ...]
) -> None:
    request_.request_id = str(uuid.uuid4())  # type: ignore[attr-defined]
    key = _key_of(lambda c: call(c, request_))
    expected = idempotency_key(
        request_,
        unkeyed=("client_ip",) if "client_ip" in request_.DESCRIPTOR.fields_by_name else (),
        secret=secret,
        secret_key=KEY,
    )
    assert key == expected


# --- ids enter fingerprints in the one spelling the use cases read them in ------------------


def _wallet_admin(capture: _Capture) -> WalletAdminServicer:
    c: Any = capture
    return WalletAdminServicer(c, c, _ANY, _ANY, TOKENS)


def _wallet_user(capture: _Capture) -> WalletServicer:
    c: Any = capture
    return WalletServicer(_ANY, c, _ANY, c, c, TOKENS, fingerprint_key=KEY)


@pytest.mark.parametrize(
    ("call", "request_", "field", "respelt", "other"),
    [
        (
            lambda s, r: _transfer(s).SendMoney(r, _ANY),
            _send(),
            "recipient_wallet_id",
            ["vpy-ab12cd", " Vpy-Ab12Cd "],
            "VPY-AB12CE",
        ),
        (
            lambda s, r: _transfer(s).SendMoney(r, _ANY),
            _send(),
            "note",
            [" rent ", "rent\n"],
            "Rent",
        ),
        (
            lambda s, r: _transfer(s).TopUp(r, _ANY),
            transfer_pb2.TopUpRequest(
                amount=money_pb2.Money(currency_code="INR", amount_minor=500),
                payment_method=transfer_pb2.PAYMENT_METHOD_UPI,
                payment_reference="upi-ref-1",
            ),
            "payment_reference",
            [" upi-ref-1", "upi-ref-1 "],
            "UPI-REF-1",  # a reference's case is the payer's: another reference
        ),
        (
            lambda s, r: _wallet_admin(s).AdminFreezeWallet(r, _ANY),
            wallet_pb2.AdminFreezeWalletRequest(wallet_id="VPY-AB12CD", reason="chargebacks"),
            "wallet_id",
            ["vpy-ab12cd", "VPY-AB12CD "],
            "VPY-AB12CE",
        ),
        (
            lambda s, r: _wallet_admin(s).AdminUnfreezeWallet(r, _ANY),
            wallet_pb2.AdminUnfreezeWalletRequest(wallet_id="VPY-AB12CD", reason="cleared"),
            "wallet_id",
            ["vpy-ab12cd"],
            "VPY-AB12CE",
        ),
        (
            lambda s, r: _wallet_admin(s).AdminSetWalletLimits(r, _ANY),
            wallet_pb2.AdminSetWalletLimitsRequest(wallet_id="VPY-AB12CD", reason="review"),
            "wallet_id",
            ["vpy-ab12cd"],
            "VPY-AB12CE",
        ),
        (
            lambda s, r: _wallet_user(s).RevokeTrustedIp(r, _ANY),
            wallet_pb2.RevokeTrustedIpRequest(ip_hash="0123456789abcdef"),
            "ip_hash",
            ["0123456789ABCDEF", " 0123456789abcdef"],
            "0123456789abcdee",
        ),
        (
            lambda s, r: _wallet_user(s).MarkNotificationRead(r, _ANY),
            wallet_pb2.MarkNotificationReadRequest(notification_id=USER),
            "notification_id",
            [USER.upper()],
            USER[:-1] + "f",
        ),
        (
            lambda s, r: _wallet_user(s).MarkAllNotificationsRead(r, _ANY),
            wallet_pb2.MarkAllNotificationsReadRequest(up_to_notification_id=USER),
            "up_to_notification_id",
            [USER.upper()],
            USER[:-1] + "f",  # another bound: IDEMPOTENCY_KEY_REUSED, never the first count
        ),
        (
            lambda s, r: _wallet_user(s).ResetPin(r, _ANY),
            wallet_pb2.ResetPinRequest(token="t" * 43, new_pin=PIN, new_pin_confirmation=PIN),
            "token",
            ["t" * 43 + "\n", " " + "t" * 43],
            "t" * 42 + "u",
        ),
        (
            lambda s, r: _wallet_user(s).ConfirmIp(r, _ANY),
            wallet_pb2.ConfirmIpRequest(token="c" * 43),
            "token",
            ["c" * 43 + "\n", " " + "c" * 43],
            "c" * 42 + "d",
        ),
    ],
    ids=[
        "SendMoney",
        "SendMoney-note",
        "TopUp-reference",
        "AdminFreezeWallet",
        "AdminUnfreezeWallet",
        "AdminSetWalletLimits",
        "RevokeTrustedIp",
        "MarkNotificationRead",
        "MarkAllNotificationsRead-bound",
        "ResetPin-token",  # review of 2026-12-05: a pasted code's trailing newline
        "ConfirmIp-token",
    ],
)
def test_a_retry_that_spells_an_id_otherwise_is_the_same_request(
    call: Callable[[_Capture, Message], Any],
    request_: Message,
    field: str,
    respelt: list[str],
    other: str,
) -> None:
    request_.request_id = str(uuid.uuid4())  # type: ignore[attr-defined]

    def key_with(value: str) -> IdempotencyKey:
        return _key_of(lambda c: call(c, _same_id(request_, **{field: value})))

    key = _key_of(lambda c: call(c, request_))
    assert [key_with(spelling) for spelling in respelt] == [key] * len(respelt)
    assert key_with(other) != key


def _wallet_all(capture: _Capture) -> WalletServicer:
    c: Any = capture
    return WalletServicer(c, c, c, c, c, TOKENS, fingerprint_key=KEY)


def _wallet_staff_all(capture: _Capture) -> WalletAdminServicer:
    c: Any = capture
    return WalletAdminServicer(c, c, c, _ANY, TOKENS)


def _kyc_admin(capture: _Capture) -> KycAdminServicer:
    c: Any = capture
    return KycAdminServicer(c, c, TOKENS)


@pytest.fixture
def _staff() -> Iterator[None]:
    principal = PRINCIPAL.set(Principal(subject=USER, role=Role.SUPER_ADMIN))
    yield
    PRINCIPAL.reset(principal)


@pytest.mark.parametrize(
    ("call", "request_", "field", "respelt", "other"),
    [
        (
            lambda s, r: _wallet_all(s).CreateWallet(r, _ANY),
            wallet_pb2.CreateWalletRequest(display_name="Asha", currency_code="INR"),
            "display_name",
            [" Asha", "Asha\n"],
            "Ashb",
        ),
        (
            lambda s, r: _wallet_all(s).CreateWallet(r, _ANY),
            wallet_pb2.CreateWalletRequest(display_name="Asha", currency_code="INR"),
            "currency_code",
            ["", " INR"],
            "USD",
        ),
        (
            lambda s, r: _wallet_all(s).FreezeMyWallet(r, _ANY),
            wallet_pb2.FreezeMyWalletRequest(note="lost my phone"),
            "note",
            ["lost my phone ", " lost my phone"],
            "lost my card",
        ),
        (
            lambda s, r: _wallet_all(s).SetMyLimit(r, _ANY),
            wallet_pb2.SetMyLimitRequest(action="send"),
            "action",
            ["SEND", " send"],
            "withdraw",
        ),
        (
            lambda s, r: _wallet_all(s).DeleteMyLimit(r, _ANY),
            wallet_pb2.DeleteMyLimitRequest(action="send"),
            "action",
            ["Send"],
            "withdraw",
        ),
        (
            lambda s, r: _wallet_staff_all(s).AdminFreezeWallet(r, _ANY),
            wallet_pb2.AdminFreezeWalletRequest(wallet_id="VPY-AB12CD", reason="fraud review"),
            "reason",
            ["fraud review ", " fraud review"],
            "fraud reviews",
        ),
        (
            lambda s, r: _wallet_staff_all(s).UpdateSetting(r, _ANY),
            wallet_pb2.UpdateSettingRequest(key="k", value="1", reason="policy"),
            "reason",
            ["policy "],
            "policy 2",
        ),
        (
            lambda s, r: _kyc_admin(s).AdminApproveKyc(r, _ANY),
            kyc_pb2.AdminApproveKycRequest(
                submission_id=USER, kyc_tier=kyc_tier_pb2.KYC_TIER_FULL, note="ok"
            ),
            "submission_id",
            [USER.upper()],
            USER[:-1] + "f",
        ),
        (
            lambda s, r: _kyc_admin(s).AdminApproveKyc(r, _ANY),
            kyc_pb2.AdminApproveKycRequest(
                submission_id=USER, kyc_tier=kyc_tier_pb2.KYC_TIER_FULL, note="ok"
            ),
            "note",
            ["ok ", "\tok"],
            "okay",
        ),
        (
            lambda s, r: _kyc_admin(s).AdminRejectKyc(r, _ANY),
            kyc_pb2.AdminRejectKycRequest(submission_id=USER, reason="blurred scan"),
            "reason",
            ["blurred scan "],
            "blurred",
        ),
    ],
    ids=[
        "CreateWallet-name",
        "CreateWallet-currency",
        "FreezeMyWallet-note",
        "SetMyLimit-action",
        "DeleteMyLimit-action",
        "AdminFreezeWallet-reason",
        "UpdateSetting-reason",
        "AdminApproveKyc-id",
        "AdminApproveKyc-note",
        "AdminRejectKyc-reason",
    ],
)
@pytest.mark.usefixtures("_staff")
def test_a_retry_spelt_as_the_use_case_reads_it_is_the_same_request(
    call: Callable[[_Capture, Message], Any],
    request_: Message,
    field: str,
    respelt: list[str],
    other: str,
) -> None:
    """Review of 2026-12-05 (helper 289): these RPCs fingerprinted ids, actions and text as
    sent while their use cases read them lower-cased or trimmed, so an approval whose reply
    was lost, retried with the submission id upper-cased from a ticket, answered
    IDEMPOTENCY_KEY_REUSED for a decision that took effect."""
    test_a_retry_that_spells_an_id_otherwise_is_the_same_request(
        call, request_, field, respelt, other
    )


def test_a_withdrawal_retried_with_its_account_spelt_otherwise_is_the_same_request() -> None:
    request_id = str(uuid.uuid4())

    def withdrawal(number: str, ifsc: str, holder: str) -> transfer_pb2.WithdrawRequest:
        request = transfer_pb2.WithdrawRequest(request_id=request_id, pin=PIN)
        request.amount.currency_code, request.amount.amount_minor = "INR", 500
        account = request.bank_account
        account.account_number, account.ifsc, account.account_holder_name = number, ifsc, holder
        return request

    def key_of(request: transfer_pb2.WithdrawRequest) -> IdempotencyKey:
        return _key_of(lambda c: _transfer(c).Withdraw(request, _ANY))

    first = key_of(withdrawal("123456789012", "HDFC0001234", "Asha Rao"))
    assert key_of(withdrawal("1234 5678 9012", "hdfc0001234", " Asha Rao ")) == first
    assert key_of(withdrawal("123456789013", "HDFC0001234", "Asha Rao")) != first
    assert key_of(withdrawal("123456789012", "HDFC0001235", "Asha Rao")) != first


# --- a retry across a rolling deploy ------------------------------------------------------------


def _request_type(package: str, *extra: tuple[str, int]) -> type[Message]:
    """A request message as one release of a service knows it: request_id, wallet_id, reason,
    and the `extra` fields a later release added."""
    string = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"{package}.proto", package=package, syntax="proto3"
    )
    message = proto.message_type.add(name="Request")
    for name, number in (("request_id", 1), ("wallet_id", 2), ("reason", 3), *extra):
        message.field.add(name=name, number=number, type=string, label=1)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Request"))


def test_a_retry_carrying_a_field_only_the_newer_release_knows_is_the_same_request() -> None:
    """During a rolling deploy a client's first try may reach a pod of the older release (the
    new field is unknown there, kept as it came) and its retry a pod of the newer one: a field
    added after the others (the next number, as fields are added) enters both fingerprints in
    the same bytes, so the retry replays. Discarding unknown fields before fingerprinting would
    leave it out of the older pod's fingerprint only: every such retry IDEMPOTENCY_KEY_REUSED."""
    older = _request_type("older")
    newer = _request_type("newer", ("until", 4))
    request_id = str(uuid.uuid4())
    sent = newer(request_id=request_id, wallet_id="VPY-AB12CD", reason="r", until="x")
    wire = sent.SerializeToString()
    on_older, on_newer = older(), newer()
    on_older.ParseFromString(wire)
    on_newer.ParseFromString(wire)

    def fingerprint(request: Message) -> str:
        key = idempotency_key(request)
        assert key is not None
        return key.fingerprint

    assert fingerprint(on_older) == fingerprint(on_newer)
    without = newer(request_id=request_id, wallet_id="VPY-AB12CD", reason="r")
    assert fingerprint(on_older) != fingerprint(without)  # the new field is compared
