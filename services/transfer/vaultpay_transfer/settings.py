"""The transfer service's settings (env prefix TRANSFER_), validated at start-up.

Keys: the bank-account hash key is derived from the root key
(`derived_key("transfer-bank-account")`) and never stored.
"""

from __future__ import annotations

from pydantic import field_validator
from pydantic_settings import SettingsConfigDict

from vaultpay_common.config import PoolSize, Seconds, SharedDatabaseSettings

__all__ = ["TransferSettings"]


class TransferSettings(SharedDatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRANSFER_", extra="ignore", frozen=True)

    grpc_address: str = "127.0.0.1:50053"
    # One pooled connection per movement in flight, held while its call waits for a wallet
    # row's lock: at 32, a 64-client SendMoney load opened and closed some 100 PostgreSQL
    # sessions every few seconds (README, Benchmarks > Transfer). With overflow, 128 at most.
    db_pool_size: PoolSize = 64
    # The largest amount one movement may carry, in minor units (10 billion INR in paise):
    # far above any limit, far below BIGINT; anything larger is refused as INVALID_AMOUNT.
    # The same number for every currency wallet supports (WALLET_CURRENCIES, INR by default).
    max_amount_minor: int = 10**12
    # How often the outbox relay looks for due events (it is also woken after each commit).
    outbox_poll_seconds: Seconds = 1.0
    # Events the relay claims per round and delivers at once: one CreateNotifications call
    # (split above wallet's cap of 100 items) and one settling statement per round
    # (adapters/deliveries.py, `notification_relay`). Larger rounds cost wallet fewer calls;
    # a round's events all wait for its one call.
    outbox_batch_size: int = 50
    # Idempotency records older than this are deleted (at least 24 h, ARCHITECTURE.md).
    idempotency_retention_hours: int = 48
    # How often the payout worker asks the (simulated) bank about pending withdrawals.
    payout_interval_seconds: float = 1.0
    # Pending payouts handled per round.
    payout_batch_size: int = 50
    # How long a payout held by a staff freeze of its wallet waits before it is checked again
    # (service_layer/payouts.py): at most this long after the freeze is lifted, it is paid out.
    payout_hold_seconds: float = 30.0
    # How long the payout worker holds a payout for one bank call (service_layer/payouts.py):
    # the claim before the call leases it for at least this long, and the call is abandoned
    # (retried after the payout's lease, as an unreachable bank) after 80% of it.
    payout_bank_seconds: float = 30.0
    # Each user's money movements (TopUp, SendMoney and Withdraw together), a token bucket in
    # this process: `movement_burst` at once, then `movement_rate_per_second`; above it
    # RATE_LIMITED (429, Retry-After), before the idempotency lookup, the PIN or the
    # database. 0 turns it off. Per replica: N transfer processes let N times through (a
    # guard against runaway clients, not a global quota, which would need a shared store on
    # the money path). Far above a person's pace; the bench and bank stacks turn it off.
    movement_rate_per_second: float = 5.0
    movement_burst: int = 20
    # How often GetTransferStats' rollup adds the hours closed since its last run (t0027):
    # GetTransferStats counts live only what came after the last hour rolled up, so at most
    # an hour, ten minutes and this interval of movements.
    stats_rollup_seconds: Seconds = 300.0

    @field_validator("idempotency_retention_hours")
    @classmethod
    def _keeps_a_day(cls, value: int) -> int:
        if value < 24:
            raise ValueError("must be at least 24 (hours)")
        return value

    @field_validator("outbox_batch_size", "payout_batch_size")
    @classmethod
    def _sane_batch(cls, value: int) -> int:
        # A payout batch of 0 leased nothing, ever: withdrawals stayed in flight, unlogged.
        if not 1 <= value <= 500:
            raise ValueError("must be between 1 and 500")
        return value

    @field_validator("payout_bank_seconds", "payout_interval_seconds", "payout_hold_seconds")
    @classmethod
    def _payout_seconds(cls, value: float) -> float:
        if not 0 < value <= 3600:
            raise ValueError("must be above 0 and at most 3600 (seconds)")
        return value

    @field_validator("movement_rate_per_second")
    @classmethod
    def _rate(cls, value: float) -> float:
        if not 0 <= value <= 1_000_000:
            raise ValueError("must be between 0 (off) and 1000000")
        return value

    @field_validator("movement_burst")
    @classmethod
    def _burst(cls, value: int) -> int:
        if not 1 <= value <= 1_000_000:
            raise ValueError("must be between 1 and 1000000")
        return value

    @field_validator("max_amount_minor")
    @classmethod
    def _fits_bigint(cls, value: int) -> int:
        if not 1 <= value <= 10**15:
            raise ValueError("must be between 1 and 10**15")
        return value

    @property
    def bank_account_key(self) -> bytes:
        return self.derived_key("transfer-bank-account")
