"""Each user's money movements through a token bucket in the process, on a fake clock:
a burst, then refusals with the wait until the next token; refill over time; one user's
bucket never touches another's; full buckets are dropped; the use cases ask it first."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from tests.fakes.transfer import FakeLedger, FakeWalletGate
from vaultpay_common.errors import ErrorKind, RateLimitedError, ValidationError
from vaultpay_common.idempotency import IdempotencyKey, request_fingerprint
from vaultpay_transfer.domain.errors import MovementRateLimitedError
from vaultpay_transfer.domain.model import PaymentMethod
from vaultpay_transfer.domain.validation import BankAccountInput
from vaultpay_transfer.service_layer.commands import AmountInput, SendMoney, TopUp, Withdraw
from vaultpay_transfer.service_layer.movements import MovementService
from vaultpay_transfer.service_layer.throttle import MovementThrottle, TokenBuckets

ALICE, BOB = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_full_burst_passes_then_the_next_call_waits_for_a_token(clock: FakeClock) -> None:
    buckets = TokenBuckets(5.0, 20, clock=clock)
    assert [buckets.take(ALICE) for _ in range(20)] == [0.0] * 20
    assert buckets.take(ALICE) == pytest.approx(0.2)  # one token every 1/5 s
    clock.now += 0.1
    assert buckets.take(ALICE) == pytest.approx(0.1)  # a refusal takes nothing


def test_tokens_come_back_at_the_rate_and_never_above_the_burst(clock: FakeClock) -> None:
    buckets = TokenBuckets(2.0, 4, clock=clock)
    for _ in range(4):
        buckets.take(ALICE)
    clock.now += 1.0  # two tokens
    assert [buckets.take(ALICE) for _ in range(2)] == [0.0, 0.0]
    assert buckets.take(ALICE) > 0.0
    clock.now += 3600.0  # full again: 4, not 7200
    assert [buckets.take(ALICE) for _ in range(4)] == [0.0] * 4
    assert buckets.take(ALICE) == pytest.approx(0.5)


def test_each_user_has_a_bucket_of_their_own(clock: FakeClock) -> None:
    buckets = TokenBuckets(1.0, 3, clock=clock)
    for _ in range(3):
        buckets.take(ALICE)
    assert buckets.take(ALICE) > 0.0
    assert [buckets.take(BOB) for _ in range(3)] == [0.0] * 3


def test_full_buckets_are_dropped_so_idle_users_cost_no_memory(clock: FakeClock) -> None:
    buckets = TokenBuckets(5.0, 20, clock=clock)  # an empty bucket fills in 4 s
    for n in range(10_000):
        buckets.take(f"user-{n}")
    assert len(buckets) == 10_000
    clock.now += 4.0  # the sweep is due; every bucket has refilled (each took one token)
    buckets.take(ALICE)
    assert len(buckets) == 1  # only the caller's fresh bucket
    for _ in range(20):
        buckets.take(BOB)  # empty: it takes the whole 4 s to fill
    clock.now += 4.0 - 1e-6
    buckets.take(ALICE)
    assert len(buckets) == 2  # Bob's not quite full bucket stays (Alice's had refilled)
    clock.now += 4.0
    buckets.take(ALICE)
    assert len(buckets) == 1


def test_a_dropped_bucket_comes_back_full_so_dropping_changes_no_answer(clock: FakeClock) -> None:
    buckets = TokenBuckets(1.0, 2, clock=clock)
    buckets.take(ALICE)
    clock.now += 10.0
    buckets.take(BOB)  # sweeps Alice's full bucket
    assert [buckets.take(ALICE) for _ in range(2)] == [0.0, 0.0]
    assert buckets.take(ALICE) == pytest.approx(1.0)


def test_the_throttle_refuses_rate_limited_with_whole_seconds_to_wait(clock: FakeClock) -> None:
    throttle = MovementThrottle(TokenBuckets(0.25, 1, clock=clock))
    throttle.admit(ALICE)
    with pytest.raises(MovementRateLimitedError) as caught:
        throttle.admit(ALICE)
    error = caught.value
    assert isinstance(error, RateLimitedError)
    assert (error.kind, error.reason) == (ErrorKind.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert error.retry_after_seconds == 4
    clock.now += 3.9
    with pytest.raises(MovementRateLimitedError) as caught:
        throttle.admit(ALICE)
    assert caught.value.retry_after_seconds == 1  # 0.1 s, rounded up to a whole second
    clock.now += 0.1
    throttle.admit(ALICE)


def test_a_bucket_needs_a_positive_rate_and_a_burst() -> None:
    with pytest.raises(ValueError, match="positive rate"):
        TokenBuckets(0.0, 20)
    with pytest.raises(ValueError, match="positive rate"):
        TokenBuckets(5.0, 0)


def _key(method: str, user: str = ALICE) -> IdempotencyKey:
    return IdempotencyKey(user, method, str(uuid.uuid4()), request_fingerprint(b""))


async def test_the_three_movements_share_the_users_bucket_and_are_refused_before_any_work(
    clock: FakeClock,
) -> None:
    ledger = FakeLedger()
    ledger.add_wallet(ALICE, "VPY-AAAAAA", 10_000)
    ledger.add_wallet(BOB, "VPY-BBBBBB", 0)
    wallet = FakeWalletGate(
        pins={ALICE: "1234"}, wallet_ids={ALICE: "VPY-AAAAAA"}, trusted_ips={ALICE: {"1.2.3.4"}}
    )
    service = MovementService(
        ledger,
        wallet,
        lambda n: f"hash-of-{n}",
        max_amount_minor=10**12,
        pin_check_key=b"pin-check-key-of-the-unit-tests!",
        throttle=MovementThrottle(TokenBuckets(1.0, 3, clock=clock)),
    )
    amount = AmountInput("INR", 100)
    top_up = TopUp(ALICE, _key("/t"), amount, PaymentMethod.UPI, "upi-ref-000123")
    send = SendMoney(ALICE, _key("/s"), "VPY-BBBBBB", amount, "", "1234", "1.2.3.4")
    account = BankAccountInput("1234 5678 9012", "hdfc0001234", "Alice A")
    withdraw = Withdraw(ALICE, _key("/w"), amount, account, "1234", "1.2.3.4")
    await service.top_up(top_up)
    await service.send_money(send)
    await service.withdraw(withdraw)
    ledger_calls, wallet_calls = list(ledger.calls), list(wallet.calls)
    for refused in (service.top_up(top_up), service.send_money(send), service.withdraw(withdraw)):
        with pytest.raises(MovementRateLimitedError):
            await refused
    # Not the idempotency lookup (`hold`), not the PIN, not the ledger.
    assert (ledger.calls, wallet.calls) == (ledger_calls, wallet_calls)
    bob_top_up = TopUp(BOB, _key("/t", BOB), amount, PaymentMethod.UPI, "upi-ref-000124")
    await service.top_up(bob_top_up)  # another user is not affected


async def test_a_request_without_a_usable_key_neither_takes_a_token_nor_is_rate_limited(
    clock: FakeClock,
) -> None:
    """README: a requestId that is not a UUID is refused before the rate. Since its refusal
    is named with the request's other bad fields by the use case (not raised alone by the
    entrypoint), the use case leaves such a call out of the bucket."""
    ledger = FakeLedger()
    ledger.add_wallet(ALICE, "VPY-AAAAAA", 10_000)
    service = MovementService(
        ledger,
        FakeWalletGate(pins={}, wallet_ids={}, trusted_ips={}),
        lambda n: f"hash-of-{n}",
        max_amount_minor=10**12,
        pin_check_key=b"pin-check-key-of-the-unit-tests!",
        throttle=MovementThrottle(TokenBuckets(1.0, 1, clock=clock)),
    )
    bad_key = ValidationError.single("request_id", "must be a UUID")
    amount = AmountInput("INR", 100)
    unkeyed = TopUp(ALICE, bad_key, amount, PaymentMethod.UPI, "upi-ref-000123")
    for _ in range(3):
        with pytest.raises(ValidationError):  # not RATE_LIMITED, and the token is still there
            await service.top_up(unkeyed)
    await service.top_up(TopUp(ALICE, _key("/t"), amount, PaymentMethod.UPI, "upi-ref-000123"))
    with pytest.raises(ValidationError) as caught:  # the bucket is empty now
        await service.top_up(replace(unkeyed, amount=AmountInput("INR", 0)))
    assert [v.field for v in caught.value.violations] == ["request_id", "amount.amount_minor"]
