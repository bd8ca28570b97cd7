"""Transaction PIN use cases: set, verify (user and transfer), change, request reset, reset.

A PIN check is one rule in two short transactions with bcrypt between them, so no row lock
is held while bcrypt runs:

1. reserve: lock the wallet row, refuse a closed, locked or PIN-less wallet (and, for a
   money movement's check, a wallet frozen otherwise: WALLET_FROZEN, before any attempt is
   counted, since the ledger would refuse it whatever PIN is given), lift a lapsed lockout,
   then count the attempt *before* checking it (a conditional UPDATE that cannot pass 3).
   Committed at once, so a crash, a cancelled call or 30 parallel guesses all count, and a
   guess beyond the third never reaches bcrypt (fails closed). While every attempt is
   counted by checks that may still be running (the last one counted within
   PIN_CHECK_SETTLE_WINDOW), the answer is PIN_CHECK_IN_PROGRESS (ABORTED: retry), not
   PIN_LOCKED: nothing is locked yet, and a right PIN among them clears the counter;
2. bcrypt, off the event loop;
3. settle: success clears the counter; the failure that used the third attempt freezes the
   wallet (PIN_LOCKOUT, 24 h), audited and notified. Every wrong PIN is audited
   (`wallet.pin_refused`: the attempt's number, which check, the client's address; never the
   PIN), and a right PIN settled after wrong ones counted before it tells the owner (a
   SECURITY notification: "N wrong PIN attempts before the right PIN"), so a session holder
   guessing between the owner's own checks leaves a trace. The outcome (ok / invalid +
   remaining / locked) is stored as the idempotent reply and committed before the error is
   raised, so a retry with the same request_id answers the same without counting again.

Phases 2 and 3 run shielded from the caller's cancellation, and phase 3 is retried after a
lost connection, so a counted attempt stays unsettled only when the wallet process dies.
The settlement is stored under the request's key, or, for a check sent without a request_id,
under a key of the check's own (the method with "#settle" appended, a fresh request_id), so
a settlement retried after a lost COMMIT reply replays what committed: one audit row, one
notice per counted attempt. The reservation is stored under the request's key with
"#reserve" appended to the method, so a retry after a crash between the phases does not
count twice either.

A retry that arrives while its first call is still queued for bcrypt, hashing or settling
(transfer's deadline passed and it retried; a client sent the movement again with its
request_id) finds the reservation but no reply yet. Within one wallet process it does not
hash again (at cost 12 a hash is ~240 ms of a core, and a burst of timeouts would double the
hashing just when the hash pool is the bottleneck): keyed checks run as a single flight
(`vaultpay_common.single_flight`), and the retry awaits the first call's outcome, the same
success, INVALID_PIN with the same remaining attempts, PIN_LOCKED or error the first call
gets, as its stored reply would answer. It joins before reserving when the check is already
hashing, or after reading the stored reservation when the first call had only just reserved.
The flight's key is the whole idempotency key, fingerprint included: another request under
the same request_id shares nothing and is still refused IDEMPOTENCY_KEY_REUSED. Neither
caller's cancellation stops the shared check; a joined movement check is answered without
the address's trust (the first call read its own address, maybe another), so the caller
looks at its address as after a replay. The flight is forgotten as the check ends, so a
later retry reads the stored reply in PostgreSQL. Across processes (two wallet replicas)
nothing is shared: a retry on another replica hashes again, and the stored reservation and
reply keep that to one counted attempt and one answer, as before.

A keyed check of an open, unfrozen wallet with attempts left (nearly every check of a money
movement) reserves and, for a right PIN, settles through `PinCheckFastPath`: the same rule
in a few statements (a movement's settlement also reads whether its client address is
trusted). Anything else takes the general path below, which has every refusal. A right PIN
whose reservation was not the counter's first attempt (others were counted before it: wrong
PINs, or checks still running) settles on the general path too, which tells the owner; the
fast settlement clears the counter whatever it held. The common case, no attempt counted
before, is as fast as before: the reservation's number says which case it is, no query.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, TypeVar

from vaultpay_common.audit import AuditEntry
from vaultpay_common.clock import Clock
from vaultpay_common.context import DEADLINE
from vaultpay_common.errors import (
    DomainError,
    UnavailableError,
    ValidationError,
)
from vaultpay_common.idempotency import (
    DataclassCodec,
    IdempotencyKey,
    IdempotencyKeyInUseError,
    ReplyCodec,
    request_fingerprint,
    run_once,
)
from vaultpay_common.outbox import OutboxMessage
from vaultpay_common.settling import Settling
from vaultpay_common.single_flight import SingleFlight, shared_outcome
from vaultpay_wallet.domain.errors import (
    InvalidPinError,
    PinAlreadySetError,
    PinChangedError,
    PinCheckInProgressError,
    PinLockedError,
    PinNotSetError,
    PinResetRateLimitedError,
    PinResetTokenInvalidError,
    WalletClosedError,
    WalletFrozenError,
)
from vaultpay_wallet.domain.model import Freeze, FreezeSource, Wallet
from vaultpay_wallet.domain.pin import (
    MAX_FAILED_PIN_ATTEMPTS,
    PIN_LOCKOUT_DURATION,
    PIN_RESET_CAP_WINDOW,
    PIN_RESET_COOLDOWN,
    PIN_RESET_TOKEN_TTL,
    hash_reset_token,
    is_pin_shaped,
    new_reset_token,
    pin_violations,
    reset_cap_wait,
)
from vaultpay_wallet.service_layer._shared import (
    load_own_wallet,
    load_wallet,
    persist_expired_lifts,
)
from vaultpay_wallet.service_layer.commands import (
    ChangePin,
    RequestPinReset,
    ResetPin,
    SetPin,
    VerifyPin,
    VerifyTransferPin,
)
from vaultpay_wallet.service_layer.notify import NotificationKind, notify
from vaultpay_wallet.service_layer.ports import (
    PinCheckFastPath,
    PinHasher,
    PinResetToken,
    SecretSealer,
    WalletUnitOfWork,
)
from vaultpay_wallet.service_layer.results import (
    MovementAddress,
    PinChanged,
    PinCheckOutcome,
    PinCheckResult,
    PinReservation,
    PinReset,
    PinResetRequested,
    PinSet,
    PinVerified,
)

__all__ = ["MAIL_TOPIC", "PIN_RESET_TEMPLATE", "PinService"]

log = logging.getLogger(__name__)

T = TypeVar("T")

MAIL_TOPIC = "mail.send"
PIN_RESET_TEMPLATE = "pin_reset"

_OUTCOME = DataclassCodec(PinCheckOutcome)
_RESERVATION = DataclassCodec(PinReservation)
_PIN_SET = DataclassCodec(PinSet)
_RESET_REQUESTED = DataclassCodec(PinResetRequested)
_PIN_RESET = DataclassCodec(PinReset)
_LOCKOUT = frozenset({FreezeSource.PIN_LOCKOUT})
_MAX_TOKEN_LENGTH = 200
_SETTLE_TRIES = 3
_SETTLE_RETRY_PAUSE = 0.05  # seconds, doubled on each retry
# The methods a keyless check's settlement is stored under (`_settlement_key`): the check's
# own, with "#settle" appended, as "#reserve" is (wallet's records, wallet's role).
_KEYLESS_SETTLEMENTS = {
    "verify": "/vaultpay.wallet.v1.WalletService/VerifyPin#settle",
    "change": "/vaultpay.wallet.v1.WalletService/ChangePin#settle",
    "movement": "/vaultpay.wallet.v1.WalletInternalService/VerifyTransferPin#settle",
}


_Checked = tuple[PinCheckOutcome, bool | None]  # the outcome, and the address's trust if read


@dataclasses.dataclass(frozen=True, slots=True)
class _CheckOf:
    """What a wrong PIN's audit row and the owner's notice say about the check: which one
    ("verify", "change" or "movement") and the caller's address ("" when not known)."""

    kind: str
    client_ip: str

    @property
    def movement(self) -> bool:
        return self.kind == "movement"


def _log_unsettled(finishing: asyncio.Future[_Checked]) -> None:
    """Retrieves the outcome of a settlement whose caller went away (so its failure is
    logged, not reported as never retrieved)."""
    if finishing.cancelled():  # the process stopping (drain's time ran out): say so
        log.warning("a counted PIN check was cut short before it settled; its attempt stays")
        return
    exc = finishing.exception()
    if exc is not None and not isinstance(exc, DomainError):
        log.error("a counted PIN check failed to settle", exc_info=exc)


def _reserve_key(key: IdempotencyKey | None) -> IdempotencyKey | None:
    return None if key is None else dataclasses.replace(key, method=key.method + "#reserve")


def _settlement_key(
    user_id: str, key: IdempotencyKey | None, reservation: PinReservation, of: _CheckOf
) -> IdempotencyKey:
    """The key a check's settlement is stored under: the request's, or for a check sent
    without a request_id one of its own, made once per counted attempt, so a settlement
    retried after a lost COMMIT reply replays what committed instead of settling again (a
    second `wallet.pin_refused` row for one wrong PIN: review of 1d32ff0)."""
    if key is not None:
        return key
    return IdempotencyKey(
        user_id,
        _KEYLESS_SETTLEMENTS[of.kind],
        str(uuid.uuid4()),
        request_fingerprint(f"{reservation.wallet_id}:{reservation.attempt}".encode()),
    )


def _raise_unless_ok(outcome: PinCheckOutcome) -> None:
    if outcome.result is PinCheckResult.INVALID:
        raise InvalidPinError(outcome.remaining_attempts)
    if outcome.result is PinCheckResult.LOCKED:
        raise PinLockedError(outcome.locked_until)


def _check_shape(pin: str, field: str) -> None:
    """A malformed PIN is bad input (INVALID_ARGUMENT) and does not count as an attempt."""
    if not is_pin_shaped(pin):
        raise ValidationError.single(field, "must be exactly 4 digits")


async def _tell_owner(
    uow: WalletUnitOfWork, wallet: Wallet, event: str, at: datetime, *, title: str, body: str
) -> None:
    """A SECURITY notification to the wallet's owner, in the transaction of `event` (deduped by
    the event, the wallet and its time)."""
    await notify(
        uow.outbox,
        user_id=wallet.user_id,
        kind=NotificationKind.SECURITY,
        title=title,
        body=body,
        dedupe_key=f"{event}:{wallet.id}:{at.isoformat()}",
    )


class PinService:
    def __init__(
        self,
        uow: Callable[[], WalletUnitOfWork],
        clock: Clock,
        hasher: PinHasher,
        sealer: SecretSealer,
        fast_path: PinCheckFastPath | None = None,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._hasher = hasher
        self._sealer = sealer
        self._fast = fast_path
        self._checks: SingleFlight[IdempotencyKey, _Checked] = SingleFlight()
        self._setting: SingleFlight[str, PinSet] = SingleFlight()  # SetPin, by user
        # Every counted check still hashing or settling, keyed or not: `drain` waits for them.
        self._settling = Settling("PIN checks")

    @property
    def checks_in_flight(self) -> int:
        """Keyed PIN checks hashing or settling in this process now."""
        return len(self._checks)

    async def drain(self, within: float) -> int:
        """At shutdown, before the hasher closes: waits up to `within` seconds for the counted
        PIN checks still running, whose callers may have gone (a settlement outlives its
        caller), and returns how many did not finish (logged). The server's stop waits only
        for handlers, and closing the hasher cancels its queue: each check cut short so kept
        its attempt counted and unsettled, in silence, PIN_CHECK_IN_PROGRESS for 30 s and a
        wrong PIN after (review of 2026-12-05: every deploy under load took attempts)."""
        return await self._settling.drain(within)

    async def _stored(self, key: IdempotencyKey | None, codec: ReplyCodec[T]) -> T | None:
        """The stored reply of an earlier call with this key, checked before bcrypt runs."""
        if key is None:
            return None
        async with self._uow() as uow:
            stored = await uow.idempotency.claim(key)
        return None if stored is None else codec.loads(stored)

    async def _replayed_or(
        self, key: IdempotencyKey | None, codec: ReplyCodec[T], refusal: DomainError
    ) -> T:
        """The stored reply of this very request, or `refusal`, the cheap check's. The check
        runs after the first look for a reply, in a transaction of its own: a first attempt
        that committed between the two (a retry sent as it waited for bcrypt) is what made
        the check refuse (the PIN now set, the token now used), and its retry must get its
        answer, not PIN_ALREADY_SET or PIN_RESET_TOKEN_INVALID (review of 2026-12-05)."""
        replay = await self._stored(key, codec)
        if replay is not None:
            return replay
        raise refusal

    async def _new_pin(
        self,
        pin: str,
        confirmation: str,
        field: str,
        key: IdempotencyKey | None,
        codec: ReplyCodec[T],
    ) -> T | None:
        """Refuses a new PIN that breaks the rules (INVALID_ARGUMENT, nothing counted), but
        one the trivial-PIN rule alone refuses only after a look for the request's stored
        reply, which is returned: the rule grows between releases (1d32ff0 added the years and
        more), and a request it let through before, retried with its request_id after, must
        get its answer, not INVALID_ARGUMENT for the PIN in force (review of 1d32ff0). The
        format and confirmation rules, which never changed, refuse first. None: the PIN is
        acceptable (no look made; the caller's own follows)."""
        violations = pin_violations(pin, confirmation, field=field)
        if not violations:
            return None
        if not pin_violations(pin, confirmation, field=field, allow_guessable=True):
            replay = await self._stored(key, codec)
            if replay is not None:
                return replay
        raise ValidationError(violations)

    # ----- set ------------------------------------------------------------------------

    async def set_pin(self, cmd: SetPin) -> PinSet:
        replay = await self._new_pin(
            cmd.pin, cmd.pin_confirmation, "pin", cmd.idempotency, _PIN_SET
        )
        if replay is None:
            replay = await self._stored(cmd.idempotency, _PIN_SET)
        if replay is not None:
            return replay
        # One SetPin of a user at a time in this process: the next reads the PIN the one before
        # set, and is refused before it hashes (concurrent calls each hashed at the production
        # cost before all but one were refused PIN_ALREADY_SET: review of 2026-12-05).
        while (running := self._setting.running(cmd.user_id)) is not None:
            await asyncio.wait([running])  # its outcome is its caller's; ours is decided below
        run, _ = self._setting.start(cmd.user_id, lambda: self._set_pin(cmd))
        return await shared_outcome(run)

    async def _set_pin(self, cmd: SetPin) -> PinSet:
        async with self._uow() as uow:  # refuse before spending bcrypt time
            wallet = await load_own_wallet(uow, cmd.user_id)
            self._require_open(wallet)
            already_set = await uow.pins.get(wallet.id) is not None
        if already_set:
            return await self._replayed_or(cmd.idempotency, _PIN_SET, PinAlreadySetError())
        pin_hash = await self._hasher.hash(cmd.pin, refusable=True)

        async def work(uow: WalletUnitOfWork) -> PinSet:
            now = self._clock.now()
            wallet = await load_own_wallet(uow, cmd.user_id, for_update=True)
            self._require_open(wallet)
            if not await uow.pins.create(wallet.id, pin_hash, now):
                raise PinAlreadySetError()
            await uow.audit(AuditEntry("wallet.pin_set", "wallet", wallet.id))
            await _tell_owner(
                uow,
                wallet,
                "wallet.pin_set",
                now,
                title="Your PIN was set",
                body="A transaction PIN was set for your wallet. If this was not you, someone "
                "is using your signed-in session: change your password now (this signs out "
                "every other session), reset your PIN and contact support.",
            )
            return PinSet(now)

        async with self._uow() as uow:
            return await run_once(uow, cmd.idempotency, _PIN_SET, lambda: work(uow))

    @staticmethod
    def _require_open(wallet: Wallet) -> None:
        if wallet.is_closed:
            raise WalletClosedError()

    # ----- verify ---------------------------------------------------------------------

    async def verify_pin(self, cmd: VerifyPin) -> PinVerified:
        """The holder checks a PIN; a wrong one counts toward the lockout."""
        _check_shape(cmd.pin, "pin")
        outcome, _ = await self._check(
            cmd.user_id,
            cmd.pin,
            cmd.idempotency,
            new_pin=None,
            of=_CheckOf("verify", cmd.client_ip),
        )
        _raise_unless_ok(outcome)
        return PinVerified(outcome.wallet_id)

    async def verify_transfer_pin(
        self, cmd: VerifyTransferPin, address: MovementAddress | None = None
    ) -> PinVerified:
        """The transfer service checks a PIN for a money movement: the same rule as
        `verify_pin`, keyed by the movement's request_id (required), except that a wallet
        frozen by its holder or by staff (not by a PIN lockout, which stays PIN_LOCKED) is
        refused WALLET_FROZEN before the attempt is counted: a frozen wallet cannot send or
        withdraw, so a wrong PIN must not cost an attempt, nor a right one be needed to learn
        it (QA). A frozen wallet never takes the fast path (`wallet_pin_reserve` reserves only
        an ACTIVE wallet without freezes), so the refusal is in the general path's
        reservation, the transaction that already locks the wallet. `address`, when given,
        is looked up in the settlement of a matched PIN on the fast path, in the same call
        (`PinVerified.address_trusted`; None where it was not, for the caller to check)."""
        if cmd.idempotency is None:
            raise ValidationError.single("request_id", "is required")
        if not cmd.user_id:
            raise ValidationError.single("user_id", "is required")
        _check_shape(cmd.pin, "pin")
        outcome, trusted = await self._check(
            cmd.user_id,
            cmd.pin,
            cmd.idempotency,
            new_pin=None,
            of=_CheckOf("movement", cmd.client_ip),
            address=address,
        )
        _raise_unless_ok(outcome)
        return PinVerified(outcome.wallet_id, trusted)

    async def change_pin(self, cmd: ChangePin) -> PinChanged:
        """The current PIN is checked under the lockout rule; the new one must differ. Every
        PIN reset token still outstanding stops working, in the change's transaction."""
        _check_shape(cmd.current_pin, "current_pin")
        replayed = await self._new_pin(
            cmd.new_pin, cmd.new_pin_confirmation, "new_pin", cmd.idempotency, _OUTCOME
        )
        if replayed is not None:
            outcome = replayed
        else:
            if cmd.new_pin == cmd.current_pin:
                raise ValidationError.single("new_pin", "must differ from the current PIN")
            outcome, _ = await self._check(
                cmd.user_id,
                cmd.current_pin,
                cmd.idempotency,
                new_pin=cmd.new_pin,
                of=_CheckOf("change", cmd.client_ip),
            )
        _raise_unless_ok(outcome)
        assert outcome.pin_updated_at is not None
        return PinChanged(outcome.pin_updated_at)

    async def _check(
        self,
        user_id: str,
        pin: str,
        key: IdempotencyKey | None,
        *,
        new_pin: str | None,
        of: _CheckOf,
        address: MovementAddress | None = None,
    ) -> _Checked:
        running = None if key is None else self._checks.running(key)
        if running is not None:  # a retry while this process still checks the key
            outcome, _ = await shared_outcome(running)
            return outcome, None
        reserved = await self._reserve_fast(user_id, key)
        if reserved is None:
            settled = await self._stored(key, _OUTCOME)
            if settled is not None:
                if new_pin is None:
                    await self._require_pin_unchanged(settled)
                return settled, None
            reserved = await self._reserve(user_id, key, movement=of.movement)
        reservation, pin_hash = reserved
        settle_key = _settlement_key(user_id, key, reservation, of)

        def finish() -> Coroutine[Any, Any, _Checked]:
            return self._finish(
                reservation,
                pin,
                pin_hash,
                key,
                settle_key,
                new_pin=new_pin,
                of=of,
                address=address,
            )

        # The attempt is counted: settle it even if the caller goes away meanwhile (a cancelled
        # RPC, the caller's deadline), so only a wallet process that dies leaves it unsettled.
        # A call with this key that got here first is hashing it already: join, do not hash.
        finishing: asyncio.Future[_Checked]
        if key is None:
            finishing, started = asyncio.ensure_future(finish()), True
        else:
            finishing, started = self._checks.start(key, finish)
        if started:
            finishing.add_done_callback(_log_unsettled)
            self._settling.track(finishing)
        outcome, trusted = await shared_outcome(finishing)
        return outcome, (trusted if started else None)  # the trust read is of its starter's address

    async def _finish(
        self,
        reservation: PinReservation,
        pin: str,
        pin_hash: str,
        key: IdempotencyKey | None,
        settle_key: IdempotencyKey,
        *,
        new_pin: str | None,
        of: _CheckOf,
        address: MovementAddress | None,
    ) -> _Checked:
        """Hashes and settles a counted attempt. `key`: the request's (None without a
        request_id); `settle_key`: what the settlement is stored under, `key` or, without
        one, the check's own (`_settlement_key`), so each try of the loop below replays a
        settlement that committed."""
        # A task of its own (its own copy of the context): it outlives the caller's deadline,
        # as it outlives the caller, and a retry that joins it must not inherit that
        # deadline either; the settlement's statements have the engine's timeout only.
        DEADLINE.set(None)
        matched = await self._hasher.verify(pin, pin_hash, movement=of.movement)
        new_hash = await self._hasher.hash(new_pin) if matched and new_pin is not None else None
        # Attempts counted before this one (wrong PINs to tell the owner of, or checks still
        # running): the general settlement, which reads the counter. Else the fast one.
        fast = self._fast if reservation.attempt <= 1 else None
        for attempt in range(_SETTLE_TRIES):
            try:
                if matched and new_hash is None and fast is not None and key is not None:
                    ok = PinCheckOutcome(
                        reservation.wallet_id,
                        PinCheckResult.OK,
                        MAX_FAILED_PIN_ATTEMPTS,
                        pin_updated_at=reservation.pin_updated_at,
                    )
                    reply = _OUTCOME.dumps(ok)
                    if address is None:
                        if await fast.settle_match(reservation, key, reply):
                            return ok, None
                    else:
                        settled, trusted = await fast.settle_movement_match(
                            reservation, key, reply, address, self._clock.now()
                        )
                        if settled:
                            return ok, trusted
                async with self._uow() as uow:
                    outcome = await run_once(
                        uow,
                        settle_key,
                        _OUTCOME,
                        lambda: self._settle(uow, reservation, matched, new_hash, of),
                    )
                return outcome, None
            except (UnavailableError, IdempotencyKeyInUseError):
                # A lost connection, or the key held a moment by another replica's call of
                # the same check (its stored-answer look, its own settlement): settling again
                # is safe (the settlement's key replays a committed outcome, the request's or,
                # for a check sent without one, the check's own: a lost COMMIT reply audited
                # a keyless wrong PIN twice, review of 1d32ff0), and a lockout is never left
                # unwritten for a moment's contention.
                if attempt + 1 == _SETTLE_TRIES:
                    raise
                await asyncio.sleep(_SETTLE_RETRY_PAUSE * 2**attempt)
        raise AssertionError("unreachable")

    async def _require_pin_unchanged(self, stored: PinCheckOutcome) -> None:
        """A stored outcome of a check replays only while the PIN it was judged against is
        still the PIN (`pin_updated_at` is that version; None in replies stored before it was,
        and in refusals stored before 2026-12-05): an OK must not pass again after the owner
        changed a leaked PIN, and a wrong-PIN or lockout answer must not outlive a reset
        (review of 2026-12-05: the same request with the PIN just reset to what it sent
        answered INVALID_PIN, and PIN_LOCKED until a lockout the reset had lifted)."""
        if stored.pin_updated_at is None:
            return
        async with self._uow() as uow:
            record = await uow.pins.get(stored.wallet_id)
        if record is None or record.updated_at != stored.pin_updated_at:
            raise PinChangedError()

    async def _reserve_fast(
        self, user_id: str, key: IdempotencyKey | None
    ) -> tuple[PinReservation, str] | None:
        """The common case in one short transaction (None: take the general path)."""
        reserve_key = _reserve_key(key)
        if self._fast is None or key is None or reserve_key is None:
            return None
        return await self._fast.reserve(
            user_id, key, reserve_key, self._clock.now(), _RESERVATION.dumps
        )

    async def _reserve(
        self, user_id: str, key: IdempotencyKey | None, *, movement: bool = False
    ) -> tuple[PinReservation, str]:
        """Counts an attempt (general path). `movement`: a money movement's check, which also
        refuses a wallet frozen other than by a lockout (WALLET_FROZEN) before counting."""
        reserve_key = _reserve_key(key)
        async with self._uow() as uow:
            stored = None if reserve_key is None else await uow.idempotency.claim(reserve_key)
            if stored is not None:
                reservation = _RESERVATION.loads(stored)
                record = await uow.pins.get(reservation.wallet_id)
                if record is None:
                    raise PinNotSetError()
                if record.updated_at != reservation.pin_updated_at:
                    raise PinChangedError()  # the attempt was counted against the old PIN
                return reservation, record.pin_hash
            now = self._clock.now()
            wallet = await load_own_wallet(uow, user_id, for_update=True)
            self._require_open(wallet)
            record = await uow.pins.get(wallet.id)
            if record is None:
                raise PinNotSetError()
            lockout = wallet.freeze_by(FreezeSource.PIN_LOCKOUT)
            if lockout is not None and lockout.is_active(now):
                raise PinLockedError(lockout.until)
            if movement and wallet.frozen_besides_lockout(now):
                hold = wallet.movement_hold(now)
                raise WalletFrozenError.held_by(
                    None if hold is None else hold.source.value,
                    None if hold is None else hold.until,
                )
            wallet = await persist_expired_lifts(uow, wallet, now)
            if lockout is None and record.stale_lock_expired(now):
                await uow.pins.reset_attempts(wallet.id)
            attempt = await uow.pins.reserve_attempt(wallet.id, now)
            if attempt is None:
                # Every attempt is counted and none settled into a lockout: refuse without
                # checking. Recently counted ones may be checks still running (retry);
                # older ones died before settling and count as wrong PINs (fail closed).
                if record.checks_may_be_running(now):
                    raise PinCheckInProgressError()
                # Its end is known: the counter starts again a lockout's length after its last
                # attempt (review of 2026-12-05: PIN_LOCKED came with no `until`).
                raise PinLockedError(record.stale_lock_ends)
            reservation = PinReservation(wallet.id, attempt, record.updated_at)
            if reserve_key is not None:
                await uow.idempotency.save(reserve_key, _RESERVATION.dumps(reservation))
            await uow.commit()
        return reservation, record.pin_hash

    async def _settle(
        self,
        uow: WalletUnitOfWork,
        reservation: PinReservation,
        matched: bool,
        new_hash: str | None,
        of: _CheckOf,
    ) -> PinCheckOutcome:
        now = self._clock.now()
        wallet = await load_wallet(uow, reservation.wallet_id, for_update=True)
        self._require_open(wallet)
        record = await uow.pins.get(wallet.id)
        if record is None:
            raise PinNotSetError()
        if record.updated_at != reservation.pin_updated_at:
            if new_hash is not None and record.pin_hash == new_hash:
                # This very change committed and its answer was lost (a settlement retried
                # after a lost COMMIT reply; its key replays it now, keyless or not, so this
                # is the second guard): a salted hash is never written twice, so the PIN in
                # force is the one this call set.
                return PinCheckOutcome(
                    wallet.id,
                    PinCheckResult.OK,
                    MAX_FAILED_PIN_ATTEMPTS,
                    pin_updated_at=record.updated_at,
                )
            # Final, like a retry of a check that passed before the change: a retry with this
            # request_id would be checked against the reservation of the old PIN again.
            raise PinChangedError()
        lockout = wallet.freeze_by(FreezeSource.PIN_LOCKOUT)
        locked = lockout is not None and lockout.is_active(now)
        if matched and not locked:
            # Counted before this check's attempt and not cleared since (a right PIN settled
            # meanwhile clears the counter, below this check's number): wrong PINs, unless a
            # check of the owner's still runs, whose attempt is then among them.
            earlier = min(reservation.attempt, record.failed_attempts) - 1
            if earlier > 0:
                await self._tell_of_wrong_pins(uow, wallet, earlier, of, now)
            return await self._succeeded(uow, wallet, new_hash, record.updated_at)
        if not matched:
            await uow.audit(
                AuditEntry(
                    "wallet.pin_refused",
                    "wallet",
                    wallet.id,
                    {"attempt": str(reservation.attempt), "check": of.kind, "ip": of.client_ip},
                )
            )
        # The counter as it stands, not as this check's reservation found it: a right PIN
        # settled meanwhile cleared it (the owner proved the PIN: a wrong one in flight then
        # locks nothing), and other wrong ones counted meanwhile leave fewer attempts than the
        # reservation's number says (review of 2026-12-05: a right PIN between two wrong ones
        # still locked the wallet for 24 h as three in a row, and two concurrent wrong PINs
        # answered "2 left" when one was).
        # Each refusal names the PIN it was judged against (`pin_updated_at`), as an OK does: a
        # retry after the PIN was reset or changed is told PIN_CHANGED, not the old verdict.
        version = record.updated_at
        counter_full = record.failed_attempts >= MAX_FAILED_PIN_ATTEMPTS
        if matched or reservation.attempt < MAX_FAILED_PIN_ATTEMPTS or not counter_full:
            if locked:  # the right PIN during a lockout is still refused
                assert lockout is not None
                return PinCheckOutcome(
                    wallet.id, PinCheckResult.LOCKED, 0, lockout.until, pin_updated_at=version
                )
            return PinCheckOutcome(
                wallet.id, PinCheckResult.INVALID, record.attempts_left, pin_updated_at=version
            )
        if locked:
            assert lockout is not None
            return PinCheckOutcome(
                wallet.id, PinCheckResult.LOCKED, 0, lockout.until, pin_updated_at=version
            )
        return await self._lock_out(uow, wallet, version)

    async def _succeeded(
        self, uow: WalletUnitOfWork, wallet: Wallet, new_hash: str | None, matched_pin: datetime
    ) -> PinCheckOutcome:
        if new_hash is None:
            await uow.pins.reset_attempts(wallet.id)
            return PinCheckOutcome(
                wallet.id, PinCheckResult.OK, MAX_FAILED_PIN_ATTEMPTS, pin_updated_at=matched_pin
            )
        changed_at = self._clock.now()
        await uow.pins.set_hash(wallet.id, new_hash, changed_at)
        # A reset link mailed before the change must not undo it: an owner who changes a PIN
        # they think leaked may also have lost their mailbox.
        revoked = await uow.reset_tokens.invalidate_for_wallet(wallet.id, changed_at)
        await uow.audit(
            AuditEntry(
                "wallet.pin_changed", "wallet", wallet.id, {"reset_tokens_revoked": str(revoked)}
            )
        )
        await _tell_owner(
            uow,
            wallet,
            "wallet.pin_changed",
            changed_at,
            title="Your PIN was changed",
            body="The transaction PIN of your wallet was changed. If this was not you, "
            "reset your PIN and contact support.",
        )
        return PinCheckOutcome(
            wallet.id, PinCheckResult.OK, MAX_FAILED_PIN_ATTEMPTS, pin_updated_at=changed_at
        )

    @staticmethod
    async def _tell_of_wrong_pins(
        uow: WalletUnitOfWork, wallet: Wallet, count: int, of: _CheckOf, now: datetime
    ) -> None:
        """The owner learns of wrong PINs when the right one follows them: each is audited
        (`wallet.pin_refused`), but only this notice reaches the owner before a lockout."""
        attempts = "1 wrong PIN attempt was" if count == 1 else f"{count} wrong PIN attempts were"
        purpose = " for a payment" if of.movement else ""
        await _tell_owner(
            uow,
            wallet,
            "wallet.pin_refusals_told",
            now,
            title="Wrong PIN attempts on your wallet",
            body=f"{attempts} made on your wallet before the right PIN was entered{purpose}. "
            "If that was not you, someone is using your signed-in session: change your "
            "password now (this signs out every other session), change your PIN and contact "
            "support.",
        )

    async def _lock_out(
        self, uow: WalletUnitOfWork, wallet: Wallet, pin_version: datetime
    ) -> PinCheckOutcome:
        frozen_at = self._clock.now()
        until = frozen_at + PIN_LOCKOUT_DURATION
        wallet = wallet.frozen(
            Freeze(FreezeSource.PIN_LOCKOUT, "too many wrong PINs", frozen_at, until, "system"),
            frozen_at,
        )
        await uow.wallets.update(wallet)
        await uow.audit(
            AuditEntry(
                "wallet.pin_locked",
                "wallet",
                wallet.id,
                {"until": until.isoformat(), "failed_attempts": str(MAX_FAILED_PIN_ATTEMPTS)},
            )
        )
        await _tell_owner(
            uow,
            wallet,
            "wallet.pin_locked",
            frozen_at,
            title="Wallet locked after wrong PINs",
            body="Three wrong PINs in a row locked your wallet for 24 hours. Reset your PIN "
            "to unlock it sooner.",
        )
        log.warning("wallet locked after wrong PINs", extra={"wallet_id": wallet.id})
        return PinCheckOutcome(
            wallet.id, PinCheckResult.LOCKED, 0, until, pin_updated_at=pin_version
        )

    # ----- reset ----------------------------------------------------------------------

    async def request_pin_reset(self, cmd: RequestPinReset) -> PinResetRequested:
        """Mails a single-use 15-minute token; earlier unused tokens stop working. Audited,
        and the owner is notified in the app (SECURITY): only a signed-in session can ask, so
        a request the owner did not make means someone else holds one.

        At most one mail a minute: while the newest usable token is younger than
        PIN_RESET_COOLDOWN, a request answers its expiry and mints, mails, audits and
        notifies nothing (a double tap would otherwise kill the code on its way, and the
        mails, sent several at once, can arrive in any order). At most PIN_RESET_HOURLY_CAP
        tokens in PIN_RESET_CAP_WINDOW, counted from the tokens table: beyond,
        PIN_RESET_RATE_LIMITED (RESOURCE_EXHAUSTED, RetryInfo), nothing written. Either
        answer is stored under the request's key as any reply is (a refusal is not). The
        wallet's row lock orders one wallet's requests, so the looks and the mint are one
        step.

        The token is stored only as its SHA-256; on its way to the mailer it waits in the
        outbox sealed (AES-GCM, key outside the database), in params["token_sealed"]. The
        mail delivery opens it and drops the mail when the token is no longer usable
        (`reset_code_usable`).
        """

        async def work(uow: WalletUnitOfWork) -> PinResetRequested:
            now = self._clock.now()
            wallet = await load_own_wallet(uow, cmd.user_id, for_update=True)
            self._require_open(wallet)
            if await uow.pins.get(wallet.id) is None:
                raise PinNotSetError()
            pending = await uow.reset_tokens.newest_usable(wallet.id, now)
            if pending is not None and now < pending.created_at + PIN_RESET_COOLDOWN:
                return PinResetRequested(pending.expires_at)  # its mail is on its way
            minted = await uow.reset_tokens.created_since(wallet.id, now - PIN_RESET_CAP_WINDOW)
            wait = reset_cap_wait(minted, now)
            if wait is not None:
                log.info(
                    "PIN reset refused: hourly cap of mailed codes reached",
                    extra={"wallet_id": wallet.id, "retry_after_seconds": wait},
                )
                raise PinResetRateLimitedError(wait)
            token = new_reset_token()
            expires_at = now + PIN_RESET_TOKEN_TTL
            await uow.reset_tokens.invalidate_for_wallet(wallet.id, now)
            await uow.reset_tokens.add(
                PinResetToken(hash_reset_token(token), wallet.id, now, expires_at)
            )
            await uow.outbox.add(
                OutboxMessage(
                    MAIL_TOPIC,
                    {
                        "user_id": wallet.user_id,
                        "template": PIN_RESET_TEMPLATE,
                        "params": {
                            "wallet_id": wallet.id,
                            "token_sealed": self._sealer.seal(token),
                            "expires_at": expires_at.isoformat(),
                        },
                    },
                    key=wallet.user_id,
                )
            )
            await uow.audit(AuditEntry("wallet.pin_reset_requested", "wallet", wallet.id))
            await _tell_owner(
                uow,
                wallet,
                "wallet.pin_reset_requested",
                now,
                title="PIN reset requested",
                body="A code to reset your wallet's PIN was mailed to you. If you did not ask "
                "for it, someone is using your signed-in session: change your password now "
                "(this signs out every other session) and contact support.",
            )
            return PinResetRequested(expires_at)

        async with self._uow() as uow:
            return await run_once(uow, cmd.idempotency, _RESET_REQUESTED, lambda: work(uow))

    async def reset_code_usable(self, code: str) -> bool:
        """Whether a mailed reset code still works: the mail delivery drops the mail of one
        that does not (superseded by a newer request, used, revoked by a change of the PIN or
        the wallet's closing, expired), so no mail carries a dead code."""
        async with self._uow() as uow:
            found = await uow.reset_tokens.get(hash_reset_token(code))
        return found is not None and found.usable(self._clock.now())

    async def reset_pin(self, cmd: ResetPin) -> PinReset:
        """Public: the token is the credential. Sets the PIN, clears the counter, lifts only
        a PIN-lockout freeze; the token works once."""
        token = cmd.token.strip()
        if not token:
            raise ValidationError.single("token", "is required")
        if len(token) > _MAX_TOKEN_LENGTH:
            raise ValidationError.single("token", "is too long")
        replay = await self._new_pin(
            cmd.new_pin, cmd.new_pin_confirmation, "new_pin", cmd.idempotency, _PIN_RESET
        )
        if replay is None:
            replay = await self._stored(cmd.idempotency, _PIN_RESET)
        if replay is not None:
            return replay
        token_hash = hash_reset_token(token)
        async with self._uow() as uow:  # a cheap refusal before bcrypt (public endpoint)
            found = await uow.reset_tokens.get(token_hash)
        if found is None or not found.usable(self._clock.now()):
            return await self._replayed_or(cmd.idempotency, _PIN_RESET, PinResetTokenInvalidError())
        pin_hash = await self._hasher.hash(cmd.new_pin, refusable=True)

        async def work(uow: WalletUnitOfWork) -> PinReset:
            # The wallet's row first, then the token's: RequestPinReset and a PIN check's
            # settlement lock the wallet, then write its tokens. The other order (token, then
            # wallet) deadlocked with them (40P01, INTERNAL) when a reset link was opened as
            # another tab asked for a new code (review of 2026-12-05).
            wallet = await load_wallet(uow, found.wallet_id, for_update=True)
            now = self._clock.now()
            record = await uow.reset_tokens.get(token_hash, for_update=True)
            if record is None or not record.usable(now) or record.wallet_id != wallet.id:
                raise PinResetTokenInvalidError()
            if wallet.is_closed:
                raise PinResetTokenInvalidError()
            await uow.reset_tokens.mark_used(token_hash, now)
            if await uow.pins.get(wallet.id) is None:
                await uow.pins.create(wallet.id, pin_hash, now)
            else:
                await uow.pins.set_hash(wallet.id, pin_hash, now)
            lifted = wallet.freeze_by(FreezeSource.PIN_LOCKOUT) is not None
            if lifted:
                await uow.wallets.update(wallet.lifted(_LOCKOUT, now))
            await uow.audit(
                AuditEntry(
                    "wallet.pin_reset",
                    "wallet",
                    wallet.id,
                    {"lockout_lifted": str(lifted).lower()},
                    actor_id=wallet.user_id,
                    actor_role="USER",
                )
            )
            await _tell_owner(
                uow,
                wallet,
                "wallet.pin_reset",
                now,
                title="Your PIN was reset",
                body="The transaction PIN of your wallet was reset with an emailed code."
                + (" The PIN lockout was lifted." if lifted else ""),
            )
            return PinReset(now, lifted)

        async with self._uow() as uow:
            return await run_once(uow, cmd.idempotency, _PIN_RESET, lambda: work(uow))
