"""What a wrong PIN leaves behind, on fakes: an audit row per wrong PIN (its attempt's number,
which check, the client's address, never the PIN), and, when the right PIN follows wrong ones,
a SECURITY notice to the owner; the lockout rule is unchanged. With the fast path, a right PIN
after none counted settles there as before (no notice, no general settlement), and one after
wrong PINs settles on the general path, which tells the owner. Also: the PINs refused as too
easy to guess (years, the most common ones), and SetPin's notice.

Review of 9e17f85: a wrong PIN wrote nothing and a right one cleared the counter, so whoever
held a session could guess twice after each of the owner's payments, unseen.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from tests.fakes.wallet import FakePinCheckFastPath
from tests.unit.wallet.wallet_world import World, key
from vaultpay.wallet.v1 import wallet_pb2
from vaultpay_common.audit import AuditEntry
from vaultpay_common.context import CLIENT_IP, METHOD, PRINCIPAL, Principal, Role
from vaultpay_common.db import DatabaseUnavailableError
from vaultpay_common.errors import ValidationError
from vaultpay_common.outbox import OutboxMessage
from vaultpay_wallet.domain import pin as pin_rules
from vaultpay_wallet.domain.errors import InvalidPinError, PinLockedError
from vaultpay_wallet.domain.model import FreezeSource
from vaultpay_wallet.domain.pin import pin_violations
from vaultpay_wallet.entrypoints.servicers import WalletServicer
from vaultpay_wallet.entrypoints.servicers_staff import WalletInternalServicer
from vaultpay_wallet.service_layer.commands import (
    ChangePin,
    CreateWallet,
    RequestPinReset,
    ResetPin,
    SetPin,
    VerifyPin,
    VerifyTransferPin,
)
from vaultpay_wallet.service_layer.pins import PinService

GOOD = "2468"
BAD = "1357"
IP = "203.0.113.7"
WRONG_PINS_TITLE = "Wrong PIN attempts on your wallet"


def _refusals(world: World) -> list[AuditEntry]:
    return [e for e in world.uow.audit_entries if e.action == "wallet.pin_refused"]


def _notices(world: World, title: str) -> list[OutboxMessage]:
    return [
        m for m in world.uow.outbox.of_topic("notification.create") if m.payload["title"] == title
    ]


def _with_fast_path(world: World) -> FakePinCheckFastPath:
    fast = FakePinCheckFastPath(world.uow)
    world.pins = PinService(lambda: world.uow, world.clock, world.hasher, world.sealer, fast)
    return fast


# ----- every wrong PIN is audited ----------------------------------------------------------


async def test_every_wrong_pin_is_audited_with_its_attempt_check_and_address() -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    with pytest.raises(InvalidPinError):
        await world.pins.verify_pin(VerifyPin("alice", BAD, key(), client_ip=IP))
    with pytest.raises(InvalidPinError):
        await world.pins.change_pin(ChangePin("alice", BAD, "8642", "8642", key(), IP))
    with pytest.raises(PinLockedError):  # the third: audited too, then the lockout
        await world.pins.verify_transfer_pin(VerifyTransferPin("alice", "9999", key("t"), IP))

    refusals = _refusals(world)
    assert [(e.target_type, e.target_id) for e in refusals] == [("wallet", wallet.id)] * 3
    assert [e.details for e in refusals] == [
        {"attempt": "1", "check": "verify", "ip": IP},
        {"attempt": "2", "check": "change", "ip": IP},
        {"attempt": "3", "check": "movement", "ip": IP},
    ]
    actions = [e.action for e in world.uow.audit_entries]
    assert actions[-2:] == ["wallet.pin_refused", "wallet.pin_locked"]
    assert all(BAD not in repr(e) and "9999" not in repr(e) for e in world.uow.audit_entries)


async def test_a_retried_wrong_pin_is_audited_once() -> None:
    world = World()
    await world.open_wallet_with_pin()
    k = key()
    for _ in range(2):
        with pytest.raises(InvalidPinError):
            await world.pins.verify_pin(VerifyPin("alice", BAD, k))

    [refusal] = _refusals(world)
    assert refusal.details["ip"] == ""  # no address known: said so, not made up


async def test_a_right_pin_and_a_malformed_one_are_not_refusals() -> None:
    world = World()
    await world.open_wallet_with_pin()
    await world.pins.verify_pin(VerifyPin("alice", GOOD, key()))
    with pytest.raises(ValidationError):
        await world.pins.verify_pin(VerifyPin("alice", "12a4", key()))

    assert _refusals(world) == []


class _StoppedError(Exception):
    pass


class _Capture:
    """Stands in for the use-case service: records the command, then stops the call."""

    def __init__(self) -> None:
        self.commands: list[Any] = []

    def __getattr__(self, name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
        async def record(command: Any, *rest: Any) -> Any:
            self.commands.append(command)
            raise _StoppedError

        return record


def _servicer_call(rpc: str, capture: Any, user: str) -> Coroutine[Any, Any, Any]:
    none: Any = None
    key, rid = b"k" * 32, str(uuid.uuid4())
    user_rpcs = WalletServicer(none, capture, none, none, none, none, fingerprint_key=key)
    if rpc == "VerifyPin":
        return user_rpcs.VerifyPin(wallet_pb2.VerifyPinRequest(request_id=rid, pin=BAD), none)
    if rpc == "ChangePin":
        change = wallet_pb2.ChangePinRequest(
            request_id=rid, current_pin=BAD, new_pin="8642", new_pin_confirmation="8642"
        )
        return user_rpcs.ChangePin(change, none)
    internal = WalletInternalServicer(capture, none, none, none, none, fingerprint_key=key)
    moved = wallet_pb2.VerifyTransferPinRequest(request_id=rid, user_id=user, pin=BAD, client_ip=IP)
    return internal.VerifyTransferPin(moved, none)


@pytest.mark.parametrize(
    ("rpc", "vouched"),
    [("VerifyPin", IP), ("ChangePin", IP), ("VerifyTransferPin", "10.0.0.5")],
)
async def test_the_servicers_hand_the_callers_address_to_the_check(rpc: str, vouched: str) -> None:
    """A user's RPC: the address the gateway vouched for; transfer's: the mover's address it
    sends (the call's own address is transfer's)."""
    user = str(uuid.uuid4())
    capture = _Capture()
    principal = PRINCIPAL.set(Principal(subject=user, role=Role.USER))
    method = METHOD.set(f"/vaultpay.wallet.v1.WalletService/{rpc}")
    address = CLIENT_IP.set(vouched)
    try:
        with pytest.raises(_StoppedError):
            await _servicer_call(rpc, capture, user)
    finally:
        CLIENT_IP.reset(address)
        METHOD.reset(method)
        PRINCIPAL.reset(principal)

    [command] = capture.commands
    assert command.client_ip == IP


# ----- the owner learns of wrong PINs when the right one follows ---------------------------


@pytest.mark.parametrize("fast", [False, True], ids=["general", "fast"])
async def test_a_right_pin_after_wrong_ones_tells_the_owner_how_many(fast: bool) -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    if fast:
        _with_fast_path(world)
    for _ in range(2):
        with pytest.raises(InvalidPinError):
            await world.pins.verify_transfer_pin(VerifyTransferPin("alice", BAD, key("t"), IP))

    await world.pins.verify_transfer_pin(VerifyTransferPin("alice", GOOD, key("t"), IP))

    [notice] = _notices(world, WRONG_PINS_TITLE)
    assert notice.payload["kind"] == "SECURITY"
    body = notice.payload["body"]
    assert body.startswith("2 wrong PIN attempts were made on your wallet before the right PIN")
    assert "for a payment" in body and "change your password" in body
    assert BAD not in repr(notice.payload) and GOOD not in repr(notice.payload)
    assert world.uow.pins.records[wallet.id].failed_attempts == 0
    # Told once: the counter is clear, the next right PIN says nothing more.
    await world.pins.verify_pin(VerifyPin("alice", GOOD, key()))
    assert len(_notices(world, WRONG_PINS_TITLE)) == 1


async def test_one_wrong_pin_before_a_right_check_says_one() -> None:
    world = World()
    await world.open_wallet_with_pin()
    with pytest.raises(InvalidPinError):
        await world.pins.verify_pin(VerifyPin("alice", BAD, key()))
    await world.pins.change_pin(ChangePin("alice", GOOD, "8642", "8642", key()))

    [notice] = _notices(world, WRONG_PINS_TITLE)
    assert notice.payload["body"].startswith("1 wrong PIN attempt was made on your wallet")
    assert "for a payment" not in notice.payload["body"]


async def test_a_right_pin_with_none_wrong_before_it_stays_on_the_fast_path_and_says_nothing() -> (
    None
):
    """The common case of every money movement: one fast settlement, no notice, no audit."""
    world = World()
    await world.open_wallet_with_pin()
    fast = _with_fast_path(world)
    audited = len(world.uow.audit_entries)

    await world.pins.verify_transfer_pin(VerifyTransferPin("alice", GOOD, key("t"), IP))

    assert fast.settlements == 1
    assert _notices(world, WRONG_PINS_TITLE) == []
    assert len(world.uow.audit_entries) == audited


async def test_a_right_pin_after_wrong_ones_settles_on_the_general_path() -> None:
    """The fast settlement clears the counter whatever it held: after wrong PINs it is not
    used, so the settlement that reads the counter tells the owner."""
    world = World()
    await world.open_wallet_with_pin()
    fast = _with_fast_path(world)
    with pytest.raises(InvalidPinError):
        await world.pins.verify_transfer_pin(VerifyTransferPin("alice", BAD, key("t"), IP))

    await world.pins.verify_transfer_pin(VerifyTransferPin("alice", GOOD, key("t"), IP))

    assert (fast.reservations, fast.settlements) == (2, 0)
    assert len(_notices(world, WRONG_PINS_TITLE)) == 1


async def test_the_lockout_rule_is_unchanged_and_a_reset_after_it_says_nothing_of_them() -> None:
    world = World()
    await world.open_wallet_with_pin()
    for expected in (InvalidPinError, InvalidPinError, PinLockedError):
        with pytest.raises(expected):
            await world.pins.verify_pin(VerifyPin("alice", BAD, key()))
    with pytest.raises(PinLockedError):  # the right PIN during the lockout: still refused
        await world.pins.verify_pin(VerifyPin("alice", GOOD, key()))

    assert len(_refusals(world)) == 3
    assert _notices(world, WRONG_PINS_TITLE) == []  # the lockout's own notice said it
    assert len(_notices(world, "Wallet locked after wrong PINs")) == 1
    await world.pins.request_pin_reset(RequestPinReset("alice", key()))
    [mail] = world.uow.outbox.of_topic("mail.send")
    token = world.sealer.open(mail.payload["params"]["token_sealed"])
    await world.pins.reset_pin(ResetPin(token, "8642", "8642", key("anon")))
    await world.pins.verify_pin(VerifyPin("alice", "8642", key()))
    assert _notices(world, WRONG_PINS_TITLE) == []


# ----- trivial PINs and SetPin's notice ----------------------------------------------------


@pytest.mark.parametrize(
    "pin",
    ["1900", "1955", "1987", "1999", "2001", "2024", "2039", "1313", "1212", "1004", "2580"],
)
async def test_years_and_the_most_common_pins_are_refused_as_too_easy(pin: str) -> None:
    world = World()
    await world.open_wallet()
    before = world.snapshot()

    with pytest.raises(ValidationError) as refused:
        await world.pins.set_pin(SetPin("alice", pin, pin, key()))

    [violation] = refused.value.violations
    assert violation.field == "pin"
    assert violation.description.startswith("is too easy to guess")
    assert pin not in str(refused.value)
    assert world.snapshot() == before


@pytest.mark.parametrize("pin", ["1899", "2040", "2468", "4821", "7394", "1357", "0852"])
def test_pins_beside_the_refused_ones_pass_or_fail_as_listed(pin: str) -> None:
    refused = pin_violations(pin, pin, field="pin") != []
    assert refused is (pin == "0852")  # the keypad column up, listed; the rest pass


def test_repeats_and_runs_are_still_refused() -> None:
    for pin in ("0000", "7777", "0123", "6789", "3210", "9876"):
        assert pin_violations(pin, pin, field="pin"), pin


async def test_setting_a_pin_tells_the_owner_once() -> None:
    world = World()
    await world.wallets.create_wallet(CreateWallet("alice", "Alice A", "", key()))
    k = key()
    await world.pins.set_pin(SetPin("alice", GOOD, GOOD, k))
    await world.pins.set_pin(SetPin("alice", GOOD, GOOD, k))  # a retry

    [notice] = _notices(world, "Your PIN was set")
    assert notice.payload["kind"] == "SECURITY"
    assert "change your password" in notice.payload["body"]
    assert GOOD not in repr(notice.payload)


# ----- review of 1d32ff0 ---------------------------------------------------------------------


def _lose_the_settlements_commit_reply(world: World) -> list[bool]:
    """The first commit that writes a `wallet.pin_refused` row commits, then its reply is lost
    (a dropped connection: "commit outcome unknown"); returns the list that says it was."""
    commit, lost = world.uow.commit, list[bool]()

    async def commits_then_loses_the_reply() -> None:
        await commit()
        if _refusals(world) and not lost:
            lost.append(True)
            raise DatabaseUnavailableError("commit outcome unknown")

    world.uow.commit = commits_then_loses_the_reply  # type: ignore[method-assign]
    return lost


@pytest.mark.parametrize("check", ["verify", "change"])
async def test_a_keyless_wrong_pin_whose_commit_reply_was_lost_is_audited_once(
    check: str,
) -> None:
    """Without a request_id the settlement had no key to replay: retried after its COMMIT's
    reply was lost, it ran again and wrote a second `wallet.pin_refused` row for one attempt."""
    world = World()
    wallet = await world.open_wallet_with_pin()
    lost = _lose_the_settlements_commit_reply(world)

    attempt = (
        world.pins.verify_pin(VerifyPin("alice", BAD, None, client_ip=IP))
        if check == "verify"
        else world.pins.change_pin(ChangePin("alice", BAD, "8642", "8642", None, IP))
    )
    with pytest.raises(InvalidPinError) as refused:
        await attempt

    assert lost == [True]
    assert refused.value.metadata == {"remaining_attempts": "2"}
    assert [e.details for e in _refusals(world)] == [{"attempt": "1", "check": check, "ip": IP}]
    assert world.uow.pins.records[wallet.id].failed_attempts == 1


async def test_a_keyless_locking_pin_whose_commit_reply_was_lost_locks_and_tells_once() -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    for _ in range(2):
        with pytest.raises(InvalidPinError):
            await world.pins.verify_pin(VerifyPin("alice", BAD, None, client_ip=IP))
    world.uow.audit_entries.clear()
    lost = _lose_the_settlements_commit_reply(world)

    with pytest.raises(PinLockedError):
        await world.pins.verify_pin(VerifyPin("alice", BAD, None, client_ip=IP))

    assert lost == [True]
    assert [e.action for e in world.uow.audit_entries] == [
        "wallet.pin_refused",
        "wallet.pin_locked",
    ]
    assert len(_notices(world, "Wallet locked after wrong PINs")) == 1
    assert world.uow.wallets.wallets[wallet.id].freeze_by(FreezeSource.PIN_LOCKOUT) is not None


# The deny list before 1d32ff0 (repeats and runs were refused as now): 1987 and 2024 passed.
_DENY_LIST_BEFORE = frozenset({"1212", "1122", "2580", "0852", "1004", "2000", "6969", "1010"})


@pytest.mark.parametrize("step", ["set", "change", "reset"])
async def test_a_retry_of_a_pin_the_rule_refuses_since_it_was_set_gets_its_answer(
    step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SetPin, ChangePin or ResetPin to 1987 that succeeded before the release that refuses
    years, retried with its request_id after it, answered INVALID_ARGUMENT for the PIN in force
    instead of its stored success: the trivial-PIN rule ran before the look for the reply."""
    world = World()
    call: Callable[[str, str], Coroutine[Any, Any, object]]
    if step == "set":
        await world.open_wallet()
        k = key()

        def call(pin: str, confirmation: str) -> Coroutine[Any, Any, object]:
            return world.pins.set_pin(SetPin("alice", pin, confirmation, k))
    elif step == "change":
        await world.open_wallet_with_pin()
        k = key()

        def call(pin: str, confirmation: str) -> Coroutine[Any, Any, object]:
            return world.pins.change_pin(ChangePin("alice", GOOD, pin, confirmation, k))
    else:
        await world.open_wallet_with_pin()
        await world.pins.request_pin_reset(RequestPinReset("alice", key()))
        (mail,) = world.uow.outbox.of_topic("mail.send")
        token = world.sealer.open(mail.payload["params"]["token_sealed"])
        k = key("anonymous")

        def call(pin: str, confirmation: str) -> Coroutine[Any, Any, object]:
            return world.pins.reset_pin(ResetPin(token, pin, confirmation, k))

    with monkeypatch.context() as before_the_release:
        before_the_release.setattr(pin_rules, "_DENY_LIST", _DENY_LIST_BEFORE)
        first = await call("1987", "1987")  # the reply lost on its way
    written = world.snapshot()

    assert await call("1987", "1987") == first  # the retry, after the release
    assert world.snapshot() == written
    # The rule holds for anything else: another request, or this one with a wrong confirmation.
    with pytest.raises(ValidationError) as mismatched:
        await call("1987", "1988")
    assert mismatched.value.violations[0].description.startswith("is too easy to guess")
    k = key(k.caller)
    with pytest.raises(ValidationError):
        await call("1987", "1987")
    assert world.snapshot() == written
