"""The money-moving use cases with fakes: input first, a retry answered before the PIN,
the PIN and IP checks through wallet, then one ledger call whose refusals become the stable
reasons of API.md."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from tests.fakes.transfer import FakeLedger, FakeWalletGate
from vaultpay.transfer.v1 import transfer_pb2
from vaultpay.type.v1 import money_pb2
from vaultpay_common.context import METHOD, PRINCIPAL, Principal, Role
from vaultpay_common.errors import DomainError, ErrorKind, ValidationError
from vaultpay_common.idempotency import (
    IdempotencyKey,
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    request_fingerprint,
)
from vaultpay_common.pagination import PageTokens
from vaultpay_transfer.domain.errors import (
    CommitOutcomeUnknownError,
    CurrencyMismatchError,
    DailyLimitExceededError,
    InsufficientBalanceError,
    IpNotTrustedError,
    KycNotVerifiedError,
    PassedThroughError,
    RecipientNotFoundError,
    SelfTransferError,
)
from vaultpay_transfer.domain.model import PaymentMethod, TransactionCategory
from vaultpay_transfer.domain.validation import BankAccountInput
from vaultpay_transfer.entrypoints.servicers import TransferServicer
from vaultpay_transfer.service_layer.commands import AmountInput, SendMoney, TopUp, Withdraw
from vaultpay_transfer.service_layer.movements import MovementService, pin_check_id

ALICE, BOB = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
ALICE_WALLET, BOB_WALLET = "VPY-AAAAAA", "VPY-BBBBBB"
HOME = "203.0.113.7"
SEND = "/vaultpay.transfer.v1.TransferService/SendMoney"
CHECK_KEY = b"pin-check-key-of-the-unit-tests!"


def key(user: str = ALICE, method: str = SEND, body: str = "", rid: str = "") -> IdempotencyKey:
    return IdempotencyKey(
        user, method, rid or str(uuid.uuid4()), request_fingerprint(body.encode())
    )


@pytest.fixture
def ledger() -> FakeLedger:
    fake = FakeLedger()
    fake.add_wallet(ALICE, ALICE_WALLET, 10_000)
    fake.add_wallet(BOB, BOB_WALLET, 0)
    return fake


@pytest.fixture
def wallet() -> FakeWalletGate:
    return FakeWalletGate(
        pins={ALICE: "1234", BOB: "4321"},
        wallet_ids={ALICE: ALICE_WALLET, BOB: BOB_WALLET},
        trusted_ips={ALICE: {HOME}, BOB: {HOME}},
    )


@pytest.fixture
def service(ledger: FakeLedger, wallet: FakeWalletGate) -> MovementService:
    return MovementService(
        ledger,
        wallet,
        lambda n: f"hash-of-{n}",
        max_amount_minor=10**12,
        pin_check_key=CHECK_KEY,
    )


def send(minor: int = 1_000, **changes: Any) -> SendMoney:
    base = SendMoney(ALICE, key(), BOB_WALLET, AmountInput("INR", minor), "lunch", "1234", HOME)
    return replace(base, **changes)


async def test_send_money_moves_the_amount_after_the_pin_and_ip_checks(
    service: MovementService, ledger: FakeLedger, wallet: FakeWalletGate
) -> None:
    debit = await service.send_money(send(2_500))
    assert debit.category is TransactionCategory.P2P_SEND
    assert (ledger.balances[ALICE_WALLET], ledger.balances[BOB_WALLET]) == (7_500, 2_500)
    assert [c[0] for c in wallet.calls] == ["pin", "ip"]


async def test_a_retry_is_answered_from_the_stored_reply_without_asking_for_the_pin_again(
    service: MovementService, ledger: FakeLedger, wallet: FakeWalletGate
) -> None:
    command = send()
    first = await service.send_money(command)
    again = await service.send_money(replace(command, pin="0000"))
    assert again == first
    assert [c[0] for c in wallet.calls] == ["pin", "ip"]  # the retry asked wallet nothing
    assert ledger.balances[BOB_WALLET] == 1_000
    assert wallet.failures == {}


async def test_a_committed_movements_retry_the_checks_now_refuse_replays_its_answer(
    ledger: FakeLedger, wallet: FakeWalletGate
) -> None:
    """Review of 2026-12-05: the input checks ran before the stored answer was read, so a
    retry of a send that went through, sent without its PIN or after the largest amount was
    lowered, was told 400 for a payment that had moved the money."""

    def service(max_amount_minor: int) -> MovementService:
        return MovementService(
            ledger,
            wallet,
            lambda n: f"hash-of-{n}",
            max_amount_minor=max_amount_minor,
            pin_check_key=CHECK_KEY,
        )

    command = send(5_000)
    first = await service(10**12).send_money(command)
    assert await service(10**12).send_money(replace(command, pin="")) == first
    assert await service(1_000).send_money(command) == first
    assert ledger.balances[BOB_WALLET] == 5_000  # moved once
    assert ledger.lookups == [command.key.request_id] * 2  # type: ignore[union-attr]
    topped = TopUp(ALICE, key(), AmountInput("INR", 7_000), PaymentMethod.UPI, "UTR-1")
    credit = await service(10**12).top_up(topped)
    assert await service(1_000).top_up(topped) == credit
    # A request the checks refuse that never committed is refused as before.
    with pytest.raises(ValidationError) as refused:
        await service(10**12).send_money(send(pin=""))
    assert [v.field for v in refused.value.violations] == ["pin"]


async def test_a_refused_retry_of_a_payment_whose_answer_expired_is_key_reused(
    service: MovementService, ledger: FakeLedger
) -> None:
    """Review of 349589b: a refused retry (no PIN) after the stored answer expired was a 400
    for a payment that went through; it is IDEMPOTENCY_KEY_REUSED, as `hold` answers."""
    command = send(2_000)
    await service.send_money(command)
    sent = command.key
    assert isinstance(sent, IdempotencyKey)
    del ledger.stored[(sent.caller, sent.method, sent.request_id)]  # purged after 48 h
    with pytest.raises(IdempotencyKeyReusedError):
        await service.send_money(replace(command, pin=""))
    assert ledger.balances[BOB_WALLET] == 2_000


async def test_the_same_request_id_with_another_request_is_refused_before_the_pin(
    service: MovementService, wallet: FakeWalletGate
) -> None:
    sent = key()
    first = send(key=sent)
    await service.send_money(first)
    other = replace(sent, fingerprint=request_fingerprint(b"another amount"))
    with pytest.raises(IdempotencyKeyReusedError):
        await service.send_money(replace(first, key=other, amount=AmountInput("INR", 5)))
    assert len(wallet.calls) == 2


async def test_a_wrong_pin_passes_wallets_reason_and_remaining_attempts_through(
    service: MovementService, ledger: FakeLedger
) -> None:
    with pytest.raises(PassedThroughError) as caught:
        await service.send_money(send(pin="9999"))
    assert (caught.value.kind, caught.value.reason) == (
        ErrorKind.FAILED_PRECONDITION,
        "INVALID_PIN",
    )
    assert caught.value.metadata == {"remaining_attempts": "2"}
    assert "send_money" not in ledger.calls


async def test_the_pin_and_ip_checks_of_one_movement_share_an_id_of_its_own(
    service: MovementService, wallet: FakeWalletGate
) -> None:
    sent = key()
    await service.send_money(send(key=sent))
    ids = {c[2] for c in wallet.calls}
    assert ids == {pin_check_id(sent, "1234", CHECK_KEY)}
    # Another user (or method) with the same request_id is another check at wallet.
    assert pin_check_id(replace(sent, caller=BOB), "1234", CHECK_KEY) not in ids
    assert pin_check_id(replace(sent, method="/x/Withdraw"), "1234", CHECK_KEY) not in ids
    # The id is keyed: whoever reads wallet's records cannot try the 10,000 PINs against it.
    assert pin_check_id(sent, "1234", b"another-key-of-thirty-two-bytes!") not in ids


async def test_another_pin_under_a_passed_checks_request_id_is_a_new_counted_check(
    service: MovementService, ledger: FakeLedger, wallet: FakeWalletGate
) -> None:
    # Review of 2026-12-03: the check passed (right PIN), the ledger refused the movement
    # (nothing stored); each guess under the same request and request_id must reach wallet
    # as a check of its own and count, never be told apart by a replay or a refusal.
    too_much = send(20_000)
    with pytest.raises(InsufficientBalanceError):
        await service.send_money(too_much)
    for guess in ("0000", "0001"):
        with pytest.raises(PassedThroughError) as caught:
            await service.send_money(replace(too_much, pin=guess))
        assert caught.value.reason == "INVALID_PIN"
    assert wallet.failures == {ALICE: 2}
    checks = [c[2] for c in wallet.calls if c[0] == "pin"]
    assert len(set(checks)) == 3
    # The right PIN again is the first check again (a retry: replayed at wallet, not counted).
    with pytest.raises(InsufficientBalanceError):
        await service.send_money(too_much)
    assert [c[2] for c in wallet.calls if c[0] == "pin"][-1] == checks[0]


async def test_a_pin_checked_for_a_refused_movement_never_passes_another_one(
    service: MovementService, ledger: FakeLedger, wallet: FakeWalletGate
) -> None:
    # The ledger refuses the first (and stores nothing); the same request_id with another
    # amount is another request, so it is another check at wallet, never the first one's OK.
    first = key()
    too_much = send(20_000, key=first)
    with pytest.raises(InsufficientBalanceError):
        await service.send_money(too_much)
    other = replace(first, fingerprint=request_fingerprint(b"1000"))
    smaller = replace(too_much, key=other, amount=AmountInput("INR", 1_000))
    await service.send_money(smaller)
    checks = [c[2] for c in wallet.calls if c[0] == "pin"]
    assert checks == [
        pin_check_id(first, "1234", CHECK_KEY),
        pin_check_id(other, "1234", CHECK_KEY),
    ]
    assert checks[0] != checks[1]


async def test_an_untrusted_address_refuses_the_movement_with_ip_not_trusted(
    service: MovementService, ledger: FakeLedger
) -> None:
    with pytest.raises(IpNotTrustedError) as caught:
        await service.send_money(send(client_ip="198.51.100.1"))
    assert caught.value.metadata == {"confirmation_sent": "true"}
    assert caught.value.message.endswith("confirm it with the code we emailed")
    assert "send_money" not in ledger.calls


def test_an_untrusted_address_mailed_no_new_code_says_so() -> None:
    refused = IpNotTrustedError(confirmation_sent=False)
    assert refused.metadata == {"confirmation_sent": "false"}
    assert refused.message.endswith("the code we emailed earlier (no new code was sent)")
    unknown = IpNotTrustedError(confirmation_sent=False, address_known=False)
    assert unknown.message == "money cannot move from a caller whose network address is unknown"


async def test_kyc_not_verified_behind_an_untrusted_address_is_refused_before_the_ip(
    service: MovementService, ledger: FakeLedger, wallet: FakeWalletGate
) -> None:
    # QA of 2026-12-03: a wallet of tier NONE was mailed a link and answered IP_NOT_TRUSTED,
    # and learned of KYC_NOT_VERIFIED only after confirming the address.
    wallet.kyc_none.add(ALICE)
    account = BankAccountInput("123456789", "HDFC0001234", "Alice A")
    cafe = "198.51.100.1"
    with pytest.raises(KycNotVerifiedError):
        await service.send_money(send(client_ip=cafe))
    with pytest.raises(KycNotVerifiedError):
        await service.withdraw(Withdraw(ALICE, key(), AmountInput("INR", 5), account, "1234", cafe))
    assert [c[0] for c in wallet.calls] == ["pin", "pin"]  # no address check, no mail
    assert "send_money" not in ledger.calls and "withdraw" not in ledger.calls
    with pytest.raises(PassedThroughError) as wrong:  # the PIN is still checked first
        await service.send_money(send(client_ip=cafe, pin="9999"))
    assert wrong.value.reason == "INVALID_PIN"


async def test_sending_to_ones_own_wallet_is_refused_after_the_pin_names_it(
    service: MovementService, ledger: FakeLedger
) -> None:
    with pytest.raises(SelfTransferError) as caught:
        await service.send_money(send(recipient_wallet_id="vpy-aaaaaa"))
    assert caught.value.reason == "SELF_TRANSFER"
    assert "send_money" not in ledger.calls


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"amount": AmountInput("INR", 0)}, "amount.amount_minor", "INVALID_AMOUNT"),
        ({"amount": AmountInput("INR", -5)}, "amount.amount_minor", "INVALID_AMOUNT"),
        ({"amount": AmountInput("INR", 10**12 + 1)}, "amount.amount_minor", "INVALID_AMOUNT"),
        ({"amount": AmountInput("inr", 5)}, "amount.currency_code", "INVALID_ARGUMENT"),
        ({"amount": None}, "amount", "INVALID_ARGUMENT"),
        ({"recipient_wallet_id": "bob"}, "recipient_wallet_id", "INVALID_ARGUMENT"),
        ({"recipient_wallet_id": ""}, "recipient_wallet_id", "INVALID_ARGUMENT"),
        ({"note": "x" * 141}, "note", "INVALID_ARGUMENT"),
        ({"note": "bad\x00note"}, "note", "INVALID_ARGUMENT"),
        ({"pin": ""}, "pin", "INVALID_ARGUMENT"),
        ({"pin": "12a4"}, "pin", "INVALID_ARGUMENT"),
    ],
)
async def test_invalid_input_names_its_field_before_anything_is_asked(
    service: MovementService,
    ledger: FakeLedger,
    wallet: FakeWalletGate,
    changes: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    with pytest.raises(ValidationError) as caught:
        await service.send_money(send(**changes))
    assert [v.field for v in caught.value.violations] == [field]
    assert caught.value.reason == reason
    assert ledger.calls == [] and wallet.calls == []


async def test_every_bad_field_of_a_movement_is_named_in_one_refusal(
    service: MovementService, ledger: FakeLedger, wallet: FakeWalletGate
) -> None:
    """QA of 2026-12-03: a send with a bad amount, recipient, note and PIN named the amount
    only; a form shows them all at once. Several bad fields are INVALID_ARGUMENT (one alone
    keeps its own reason, as above)."""
    bad: dict[str, Any] = {
        "amount": AmountInput("inr", -5),
        "recipient_wallet_id": "bob",
        "note": "x" * 141,
    }
    with pytest.raises(ValidationError) as caught:
        await service.send_money(send(**bad, pin="12a4"))
    # In the order of SendMoneyRequest's fields; both halves of the amount.
    fields = [
        "recipient_wallet_id",
        "amount.currency_code",
        "amount.amount_minor",
        "note",
        "pin",
    ]
    assert [v.field for v in caught.value.violations] == fields
    assert caught.value.reason == "INVALID_ARGUMENT"

    account = BankAccountInput("12", "HDFC0001234", "")
    with pytest.raises(ValidationError) as caught:
        await service.withdraw(Withdraw(ALICE, key(), None, account, "", HOME))
    assert [v.field for v in caught.value.violations] == [
        "amount",
        "bank_account.account_number",
        "bank_account.account_holder_name",
        "pin",
    ]

    with pytest.raises(ValidationError) as caught:
        await service.top_up(TopUp(ALICE, key(), AmountInput("inr", 5), None, ""))
    assert [v.field for v in caught.value.violations] == [
        "amount.currency_code",
        "payment_method",
        "payment_reference",
    ]
    assert ledger.calls == [] and wallet.calls == []


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("INSUFFICIENT_BALANCE", InsufficientBalanceError),
        ("RECIPIENT_NOT_FOUND", RecipientNotFoundError),
        ("DAILY_LIMIT_EXCEEDED", DailyLimitExceededError),
    ],
)
async def test_ledger_refusals_become_their_domain_errors(
    service: MovementService, ledger: FakeLedger, code: str, error: type[DomainError]
) -> None:
    ledger.forced = code
    with pytest.raises(error):
        await service.send_money(send())


async def test_an_unknown_commit_outcome_is_never_a_definite_failure(
    service: MovementService, ledger: FakeLedger
) -> None:
    ledger.fail_with = CommitOutcomeUnknownError()
    with pytest.raises(CommitOutcomeUnknownError) as caught:
        await service.send_money(send())
    assert caught.value.kind is ErrorKind.UNAVAILABLE


async def test_top_up_needs_no_pin_and_describes_the_payment(
    service: MovementService, ledger: FakeLedger, wallet: FakeWalletGate
) -> None:
    command = TopUp(ALICE, key(), AmountInput("INR", 5_000), PaymentMethod.UPI, " upi-ref-000123 ")
    credit = await service.top_up(command)
    assert credit.category is TransactionCategory.TOP_UP
    assert ledger.balances[ALICE_WALLET] == 15_000
    assert wallet.calls == []


async def test_a_currency_mismatch_names_what_mismatched_in_each_movement(
    service: MovementService, ledger: FakeLedger
) -> None:
    """The ledger tells only the sender's currency (INR); the service adds the movement and
    the amount's currency, so a top-up or withdrawal is not told about a send's recipient."""
    usd = AmountInput("USD", 500)
    account = BankAccountInput("123456789", "HDFC0001234", "Alice A")
    movements: dict[str, Callable[[], Awaitable[object]]] = {
        "top_up": lambda: service.top_up(TopUp(ALICE, key(), usd, PaymentMethod.UPI, "ref-1")),
        "withdraw": lambda: service.withdraw(Withdraw(ALICE, key(), usd, account, "1234", HOME)),
        "send_usd": lambda: service.send_money(send(amount=usd)),
        "send_inr": lambda: service.send_money(send()),
    }
    messages = {}
    for name, movement in movements.items():
        ledger.forced = "CURRENCY_MISMATCH"
        with pytest.raises(CurrencyMismatchError) as caught:
            await movement()
        messages[name] = (caught.value.message, caught.value.metadata["mismatch"])
    assert messages["top_up"] == (
        "your wallet holds INR: the amount of a top-up must be in INR, not USD",
        "amount",
    )
    assert messages["withdraw"][0].endswith("the amount of a withdrawal must be in INR, not USD")
    assert messages["send_usd"][1] == "amount"
    assert messages["send_inr"] == (
        "the recipient's wallet holds another currency than yours (INR): money can be sent"
        " only to a wallet in INR",
        "recipient",
    )


@pytest.mark.parametrize(
    ("method", "reference", "field"),
    [
        (None, "ref", "payment_method"),
        (PaymentMethod.CARD, "", "payment_reference"),
        (PaymentMethod.CARD, "x" * 65, "payment_reference"),
        (PaymentMethod.CARD, "semi;colon", "payment_reference"),
    ],
)
async def test_top_up_refuses_a_missing_method_or_a_bad_reference(
    service: MovementService, method: PaymentMethod | None, reference: str, field: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await service.top_up(TopUp(ALICE, key(), AmountInput("INR", 5), method, reference))
    assert caught.value.violations[0].field == field


async def test_withdraw_checks_pin_and_ip_and_stores_only_a_mask_and_a_keyed_hash(
    service: MovementService, ledger: FakeLedger, wallet: FakeWalletGate
) -> None:
    command = Withdraw(
        ALICE,
        key(method="/w"),
        AmountInput("INR", 4_000),
        BankAccountInput("1234 5678 9012", "hdfc0001234", "Alice A"),
        "1234",
        HOME,
    )
    debit = await service.withdraw(command)
    assert debit.category is TransactionCategory.WITHDRAW
    assert "withdraw-to:HDFC0001234:····9012:hash-of-123456789012" in ledger.calls
    assert [c[0] for c in wallet.calls] == ["pin", "ip"]


@pytest.mark.parametrize(
    ("account", "fields"),
    [
        (BankAccountInput("12345678", "HDFC0001234", "A"), ["bank_account.account_number"]),
        (BankAccountInput("1" * 19, "HDFC0001234", "A"), ["bank_account.account_number"]),
        (BankAccountInput("123456789", "HDFC1001234", "A"), ["bank_account.ifsc"]),
        (
            BankAccountInput("12345678x", "HDF0001234", ""),
            [
                "bank_account.account_number",
                "bank_account.ifsc",
                "bank_account.account_holder_name",
            ],
        ),
        (None, ["bank_account"]),
    ],
)
async def test_withdraw_validates_the_bank_account(
    service: MovementService, account: BankAccountInput | None, fields: list[str]
) -> None:
    command = Withdraw(ALICE, key(), AmountInput("INR", 5), account, "1234", HOME)
    with pytest.raises(ValidationError) as caught:
        await service.withdraw(command)
    assert [v.field for v in caught.value.violations] == fields


async def test_a_retry_while_the_first_attempt_is_on_its_way_is_in_use(
    service: MovementService, ledger: FakeLedger, wallet: FakeWalletGate
) -> None:
    """The first attempt waits at wallet; its retry must not run (it could be refused, and
    the first commit afterwards against the answer the client kept)."""
    at_wallet, release = asyncio.Event(), asyncio.Event()
    verify = wallet.verify_pin

    async def slow_verify(user_id: str, pin: str, check_id: str) -> str:
        at_wallet.set()
        await release.wait()
        return await verify(user_id, pin, check_id)

    wallet.verify_pin = slow_verify  # type: ignore[method-assign]
    first = send(2_500)
    running = asyncio.ensure_future(service.send_money(first))
    await at_wallet.wait()
    with pytest.raises(IdempotencyKeyInUseError):
        await service.send_money(first)
    release.set()
    debit = await running
    assert await service.send_money(first) == debit  # the claim is released: a replay
    assert ledger.balances[ALICE_WALLET] == 7_500


async def test_the_claim_is_released_when_a_movement_fails(
    service: MovementService, ledger: FakeLedger
) -> None:
    wrong = send(1_000, pin="9999")
    with pytest.raises(PassedThroughError):
        await service.send_money(wrong)
    with pytest.raises(PassedThroughError):  # the retry runs again, not IN_USE
        await service.send_money(wrong)


BAD_KEY = ValidationError.single("request_id", "must be a UUID")


async def test_a_bad_request_id_is_named_first_with_every_other_bad_field(
    service: MovementService, ledger: FakeLedger, wallet: FakeWalletGate
) -> None:
    """QA of 2026-12-03: a malformed request_id was refused alone, before the use case
    looked at the rest; now its refusal (read by the entrypoint) comes in the command and is
    named first, request_id being field 1 of the three requests."""
    with pytest.raises(ValidationError) as caught:
        await service.send_money(send(0, key=BAD_KEY, pin="12a4"))
    assert [v.field for v in caught.value.violations] == [
        "request_id",
        "amount.amount_minor",
        "pin",
    ]
    assert caught.value.reason == "INVALID_ARGUMENT"

    account = BankAccountInput("12", "HDFC0001234", "A")
    with pytest.raises(ValidationError) as caught:
        await service.withdraw(Withdraw(ALICE, BAD_KEY, None, account, "1234", HOME))
    assert [v.field for v in caught.value.violations] == [
        "request_id",
        "amount",
        "bank_account.account_number",
    ]

    unknown = ValidationError.single("payment_method", "is not a known payment method")
    with pytest.raises(ValidationError) as caught:
        await service.top_up(TopUp(ALICE, BAD_KEY, AmountInput("INR", 0), unknown, "ref"))
    assert [v.field for v in caught.value.violations] == [
        "request_id",
        "amount.amount_minor",
        "payment_method",
    ]
    assert ledger.calls == [] and wallet.calls == []


async def test_a_bad_request_id_alone_is_refused_alone_and_asks_nothing(
    service: MovementService, ledger: FakeLedger, wallet: FakeWalletGate
) -> None:
    with pytest.raises(ValidationError) as caught:
        await service.send_money(send(key=BAD_KEY))
    assert caught.value is BAD_KEY
    assert ledger.calls == [] and wallet.calls == []


# --- through the servicer: the entrypoint's refusals reach the use case's one refusal -----

TOP_UP = "/vaultpay.transfer.v1.TransferService/TopUp"


@pytest.fixture
def servicer(service: MovementService) -> Iterator[TransferServicer]:
    principal = PRINCIPAL.set(Principal(subject=ALICE, role=Role.USER))
    method = METHOD.set(TOP_UP)
    unused: Any = None
    yield TransferServicer(service, unused, PageTokens(b"k" * 32), fingerprint_key=CHECK_KEY)
    PRINCIPAL.reset(principal)
    METHOD.reset(method)


def _top_up_request(**changes: Any) -> transfer_pb2.TopUpRequest:
    fields: dict[str, Any] = {
        "request_id": str(uuid.uuid4()),
        "amount": money_pb2.Money(currency_code="INR", amount_minor=500),
        "payment_method": transfer_pb2.PAYMENT_METHOD_UPI,
        "payment_reference": "upi-ref-000123",
        **changes,
    }
    return transfer_pb2.TopUpRequest(**fields)


@pytest.mark.parametrize("request_id", ["not-a-uuid", "", "00000000-0000-0000-0000-000000000000"])
async def test_a_top_up_names_a_bad_request_id_a_zero_amount_and_an_unknown_method_at_once(
    servicer: TransferServicer, ledger: FakeLedger, request_id: str
) -> None:
    request = _top_up_request(
        request_id=request_id,
        amount=money_pb2.Money(currency_code="INR", amount_minor=0),
        payment_method=99,
    )
    with pytest.raises(ValidationError) as caught:
        await servicer.TopUp(request, None)  # type: ignore[arg-type]
    assert [v.field for v in caught.value.violations] == [
        "request_id",
        "amount.amount_minor",
        "payment_method",
    ]
    assert caught.value.reason == "INVALID_ARGUMENT"
    assert ledger.calls == []


async def test_through_the_servicer_one_bad_field_keeps_its_own_refusal(
    servicer: TransferServicer, ledger: FakeLedger
) -> None:
    refusals = {}
    for field, request in (
        ("request_id", _top_up_request(request_id="not-a-uuid")),
        ("payment_method", _top_up_request(payment_method=99)),
        ("amount.amount_minor", _top_up_request(amount=money_pb2.Money(currency_code="INR"))),
    ):
        with pytest.raises(ValidationError) as caught:
            await servicer.TopUp(request, None)  # type: ignore[arg-type]
        refusals[field] = ([v.field for v in caught.value.violations], caught.value.reason)
    assert refusals == {
        "request_id": (["request_id"], "INVALID_ARGUMENT"),
        "payment_method": (["payment_method"], "INVALID_ARGUMENT"),
        "amount.amount_minor": (["amount.amount_minor"], "INVALID_AMOUNT"),
    }
    assert ledger.calls == []
    await servicer.TopUp(_top_up_request(), None)  # type: ignore[arg-type]
    assert ledger.balances[ALICE_WALLET] == 10_500


async def test_a_committed_movement_logs_one_line_without_the_note_or_pin(
    service: MovementService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="vaultpay_transfer.service_layer.movements")
    debit = await service.send_money(send(2_500))
    with pytest.raises(InsufficientBalanceError):
        await service.send_money(send(999_999))
    [line] = [r for r in caplog.records if r.getMessage() == "movement committed"]
    names = ("movement", "transaction_id", "amount_minor", "wallet_id", "currency", "status")
    assert {k: getattr(line, k) for k in names} == {
        "movement": "send",
        "transaction_id": debit.transaction_id,
        "amount_minor": 2_500,
        "wallet_id": ALICE_WALLET,
        "currency": "INR",
        "status": debit.status.name,
    }
    assert not {"lunch", "1234"} & {str(v) for v in vars(line).values()}


async def test_a_replay_logs_movement_replayed_not_a_second_commit(
    service: MovementService, ledger: FakeLedger, caplog: pytest.LogCaptureFixture
) -> None:
    """A TopUp retry is answered REPLAY by the ledger, a send's retry from the held key's
    stored answer: each logs `movement replayed`, so a payment whose first answer was lost
    (and with it its `movement committed` line) still shows, and is never counted twice."""
    caplog.set_level("INFO", logger="vaultpay_transfer.service_layer.movements")
    top_up_key = key()
    command = TopUp(ALICE, top_up_key, AmountInput("INR", 5_000), PaymentMethod.UPI, "upi-ref-77")
    first = await service.top_up(command)
    again = await service.top_up(command)
    sent_key = key()
    sent = await service.send_money(send(2_500, key=sent_key))
    assert await service.send_money(send(2_500, key=sent_key)) == sent
    assert again == first
    assert ledger.calls.count("top_up") == 2
    lines = [
        (r.getMessage(), r.movement, r.transaction_id, r.movement_request_id)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.getMessage().startswith("movement ")
    ]
    top_up_id, send_id = top_up_key.request_id, sent_key.request_id
    assert lines == [
        ("movement committed", "top_up", first.transaction_id, top_up_id),
        ("movement replayed", "top_up", first.transaction_id, top_up_id),
        ("movement committed", "send", sent.transaction_id, send_id),
        ("movement replayed", "send", sent.transaction_id, send_id),
    ]


async def test_a_retry_whose_stored_answer_expired_is_reused_before_wallet_is_asked(
    service: MovementService, ledger: FakeLedger, wallet: FakeWalletGate
) -> None:
    """Review of the day's diff (2026-12-04): the ledger's moved-request check came first in
    the money function, but a SendMoney retry reached it only after wallet's PIN check, which
    refuses a frozen sender (WALLET_FROZEN for a payment that went through). The hold tells
    it before wallet is asked."""
    command = send()
    await service.send_money(command)
    scope = (command.key.caller, command.key.method, command.key.request_id)  # type: ignore[union-attr]
    del ledger.stored[scope]  # the cleanup, 48 h later
    with pytest.raises(IdempotencyKeyReusedError):
        await service.send_money(command)
    assert [c[0] for c in wallet.calls] == ["pin", "ip"]  # the first call's only
    assert ledger.balances[BOB_WALLET] == 1_000
