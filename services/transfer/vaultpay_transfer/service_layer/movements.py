"""TopUp, SendMoney and Withdraw: validate, authorise through wallet, then one ledger call.

    service = MovementService(
        ledger, wallet_gate, account_hasher, max_amount_minor=10**12,
        pin_check_key=settings.fingerprint_key,
    )
    debit = await service.send_money(SendMoney(user_id, key, "VPY-AB12CD", amount, "", pin, ip))

Every movement (TopUp too) first takes a token from its user's bucket (`throttle`,
service_layer/throttle.py; TRANSFER_MOVEMENT_RATE_PER_SECOND / _BURST): a user above the rate
is RATE_LIMITED with a retry delay before anything else, input included. Every call counts,
a retry of a completed request too (telling it apart would take the database lookup the
throttle runs before); a client within the rate never sees it. A call whose request_id the
entrypoint could not read (missing, not a UUID, the nil UUID) takes no token and is never
RATE_LIMITED: it is refused with its other bad fields, having cost only their pure checks.

The order of a PIN-checked movement:
1. the input, request_id included, in one refusal naming every bad field in the order of the
   request's fields (`InputChecks`; one bad field alone keeps its own reason, so a bad
   amount alone is INVALID_AMOUNT), before anything else is asked (the rate apart);
2. the stored answer of the same request_id: a retry is answered from it without asking for
   the PIN again, so retries never burn PIN attempts; the same request_id with another
   request is IDEMPOTENCY_KEY_REUSED;
3. the PIN (wallet's VerifyTransferPin: one lockout rule for all; a frozen or closed
   wallet is refused before its PIN is checked), then the client's IP (checked as wallet's
   CheckIpTrust checks it, which mails the confirmation code itself), both in one call to
   wallet. Behind an address wallet did not find trusted, a wallet of KYC tier NONE is
   mailed nothing and refused KYC_NOT_VERIFIED here, before IP_NOT_TRUSTED: confirming the
   address would only lead to that refusal (the ledger re-checks the tier in any case);
4. the ledger call, which re-claims the key under its advisory lock (a concurrent duplicate
   is IN_USE or the same single effect), locks the wallets and re-checks everything.
Nothing is answered OK before the ledger transaction has committed.

Steps 2 to 4 run under the key's hold (`Ledger.hold`, a PostgreSQL advisory lock taken with
the lookup and handed to the ledger transaction): a retry that arrives while the first
attempt is still on its way to the ledger (waiting on wallet, or on a paused event loop),
in this transfer process or another, is IDEMPOTENCY_KEY_IN_USE, not a second run. A refused
movement writes nothing, so without the hold a retry could be refused (say, for the
balance) and the first attempt commit afterwards, against the answer the client kept.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from collections.abc import Callable

from vaultpay_common.clock import Clock, SystemClock
from vaultpay_common.errors import ValidationError
from vaultpay_common.idempotency import IdempotencyKey
from vaultpay_transfer.domain.errors import (
    IpNotTrustedError,
    KycNotVerifiedError,
    SelfTransferError,
)
from vaultpay_transfer.domain.model import Transaction
from vaultpay_transfer.domain.outcomes import LedgerOutcome, Movement, refusal_error
from vaultpay_transfer.domain.validation import (
    Checked,
    InputChecks,
    bank_account,
    check_amount,
    check_currency,
    check_note,
    check_payment_method,
    check_payment_reference,
    check_pin_shape,
    check_recipient,
)
from vaultpay_transfer.service_layer.commands import AmountInput, SendMoney, TopUp, Withdraw
from vaultpay_transfer.service_layer.ports import Ledger, WalletGate
from vaultpay_transfer.service_layer.throttle import MovementThrottle

__all__ = ["MovementService", "pin_check_id"]

log = logging.getLogger(__name__)
COMMITTED = "movement committed"  # the log lines of an answered movement (`_logged`)
REPLAYED = "movement replayed"

# Namespace of the ids under which wallet counts a movement's PIN check and IP check.
_CHECK_NAMESPACE = uuid.UUID("6f1d3c8e-2b7a-4c59-9e0d-5a4b3c2d1e0f")


def pin_check_id(key: IdempotencyKey, pin: str, secret: bytes) -> str:
    """The request_id of this movement's checks at wallet: derived from the whole key and the
    PIN (keyed: the id is stored at wallet), so two users (or two methods) never share
    wallet's idempotency key; a retry of the same movement with the same PIN is the same
    check there (counted once toward the lockout); the same request_id with another amount
    or recipient, after the first was refused by the ledger (which stores nothing), is a
    check of its own, so a PIN checked for one movement never passes another; and another
    PIN is another check, counted: a check that passed never tells a guess right or wrong
    by replaying or refusing it."""
    pin_digest = hmac.new(secret, pin.encode(), hashlib.sha256).hexdigest()
    scope = "\x00".join((key.caller, key.method, key.request_id, key.fingerprint, pin_digest))
    return str(uuid.uuid5(_CHECK_NAMESPACE, scope))


def _amount(
    checks: InputChecks, given: AmountInput | None, maximum: int
) -> tuple[Checked[int], Checked[str]]:
    """The amount and its currency, each checked on its own (both may be named)."""
    if given is None:
        missing = checks.refuse("amount", "is required")
        return missing, missing
    currency = checks.run(lambda: check_currency("amount.currency_code", given.currency))
    minor = checks.run(
        lambda: check_amount("amount.amount_minor", given.amount_minor, maximum=maximum)
    )
    return minor, currency


class MovementService:
    def __init__(
        self,
        ledger: Ledger,
        wallet: WalletGate,
        account_hasher: Callable[[str], str],
        *,
        max_amount_minor: int,
        pin_check_key: bytes,
        clock: Clock | None = None,
        throttle: MovementThrottle | None = None,
    ) -> None:
        if len(pin_check_key) < 32:
            raise ValueError("the PIN-check key must be at least 32 bytes")
        self._pin_check_key = pin_check_key
        self._clock = clock or SystemClock()
        self._ledger = ledger
        self._wallet = wallet
        self._hash_account = account_hasher
        self._max = max_amount_minor
        self._throttle = throttle

    async def top_up(self, cmd: TopUp) -> Transaction:
        """Simulated external funding from the clearing account (no PIN: money comes in)."""
        self._admit(cmd.user_id, cmd.key)
        try:
            with InputChecks() as checks:  # in TopUpRequest's field order
                key = checks.take(cmd.key)
                minor, currency = _amount(checks, cmd.amount, self._max)
                method = checks.run(lambda: check_payment_method(cmd.payment_method))
                reference = checks.run(lambda: check_payment_reference(cmd.payment_reference))
        except ValidationError as refused:
            return await self._replayed_or(refused, cmd.key, "top_up")
        description = f"{method.value.label} {reference.value[-4:]}"
        amount = minor.value
        return self._settled(
            await self._ledger.top_up(
                key.value,
                cmd.user_id,
                amount,
                currency.value,
                method.value,
                reference.value,
                description,
            ),
            amount,
            "top_up",
            currency.value,
        )

    async def send_money(self, cmd: SendMoney) -> Transaction:
        self._admit(cmd.user_id, cmd.key)
        try:
            with InputChecks() as checks:  # in SendMoneyRequest's field order
                key = checks.take(cmd.key)
                recipient = checks.run(lambda: check_recipient(cmd.recipient_wallet_id))
                minor, currency = _amount(checks, cmd.amount, self._max)
                note = checks.run(lambda: check_note(cmd.note))
                pin = checks.run(lambda: check_pin_shape(cmd.pin))
        except ValidationError as refused:
            return await self._replayed_or(refused, cmd.key, "send")
        async with self._ledger.hold(key.value) as held:
            if held.stored is not None:
                return _logged(REPLAYED, held.stored, "send")
            wallet_id = await self._authorise(cmd.user_id, pin.value, cmd.client_ip, key.value)
            if wallet_id == recipient.value:
                raise SelfTransferError()
            return self._settled(
                await held.send_money(
                    cmd.user_id, recipient.value, minor.value, currency.value, note.value
                ),
                minor.value,
                "send",
                currency.value,
            )

    async def withdraw(self, cmd: Withdraw) -> Transaction:
        self._admit(cmd.user_id, cmd.key)
        try:
            with InputChecks() as checks:  # in WithdrawRequest's field order
                key = checks.take(cmd.key)
                minor, currency = _amount(checks, cmd.amount, self._max)
                checked_account = checks.run(lambda: bank_account(cmd.bank_account))
                pin = checks.run(lambda: check_pin_shape(cmd.pin))
        except ValidationError as refused:
            return await self._replayed_or(refused, cmd.key, "withdraw")
        account = checked_account.value
        async with self._ledger.hold(key.value) as held:
            if held.stored is not None:
                return _logged(REPLAYED, held.stored, "withdraw")
            await self._authorise(cmd.user_id, pin.value, cmd.client_ip, key.value)
            return self._settled(
                await held.withdraw(
                    cmd.user_id,
                    minor.value,
                    currency.value,
                    account.ifsc,
                    account.mask,
                    self._hash_account(account.account_number),
                    account.holder_name,
                ),
                minor.value,
                "withdraw",
                currency.value,
            )

    async def _replayed_or(
        self, refused: ValidationError, key: IdempotencyKey | ValidationError, movement: Movement
    ) -> Transaction:
        """The answer a committed movement stored for this very request, or `refused`, the
        input checks' refusal (review of 2026-12-05: a retry without its PIN, or after a
        bound was lowered, was told 400 for a payment that went through). Only a refused
        request pays the lookup."""
        if isinstance(key, IdempotencyKey):
            stored = await self._ledger.stored_answer(key)
            if stored is not None:
                return _logged(REPLAYED, stored, movement)
        raise refused

    def _admit(self, user_id: str, key: IdempotencyKey | ValidationError) -> None:
        """Takes the user's token; not for a request without a usable key, which is refused
        with its other bad fields, costs no more than reading them, and counts for nothing."""
        if self._throttle is not None and isinstance(key, IdempotencyKey):
            self._throttle.admit(user_id)

    def _settled(
        self, outcome: LedgerOutcome, amount_minor: int, movement: Movement, currency: str
    ) -> Transaction:
        if outcome.accepted and outcome.transaction is not None:
            return _logged(
                COMMITTED if outcome.code == "OK" else REPLAYED, outcome.transaction, movement
            )
        now = self._clock.now()
        raise refusal_error(
            outcome.code,
            outcome.details,
            now=now,
            amount_minor=amount_minor,
            movement=movement,
            currency=currency,
        )

    async def _authorise(self, user_id: str, pin: str, client_ip: str, key: IdempotencyKey) -> str:
        check_id = pin_check_id(key, pin, self._pin_check_key)
        checked = await self._wallet.check_movement(user_id, pin, client_ip, check_id)
        if checked.kyc_verified is False:
            raise KycNotVerifiedError()
        if not checked.ip.trusted:
            raise IpNotTrustedError(
                confirmation_sent=checked.ip.confirmation_sent, address_known=bool(client_ip)
            )
        return checked.wallet_id


def _logged(message: str, done: Transaction, movement: Movement) -> Transaction:
    """One line per answered movement, its request id from the log context: `movement
    committed` when this call committed it, `movement replayed` when a retry was answered
    with what an earlier call committed (whose own line may be missing: its answer was lost
    with its connection or its deadline). What an operator greps for when a client asks what
    became of a payment. Never the note, the PIN, a bank account or the counterparty's name."""
    log.info(
        message,
        extra={
            "movement": movement,
            "transaction_id": done.transaction_id,
            "reference": done.reference,
            "movement_request_id": done.request_id,  # the body's; `request_id` is the call's
            "wallet_id": done.wallet_id,
            "amount_minor": done.amount_minor,
            "currency": done.currency,
            "status": done.status.name,
        },
    )
    return done
