"""The wallet service's settings (env prefix WALLET_), validated at start-up."""

from __future__ import annotations

from pydantic import field_validator
from pydantic_settings import SettingsConfigDict

from vaultpay_common.config import PeerServiceSettings

__all__ = ["WalletSettings"]


class WalletSettings(PeerServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WALLET_", extra="ignore", frozen=True)

    grpc_address: str = "127.0.0.1:50052"
    # One pooled connection per movement in flight, held while its call waits for a wallet
    # row's lock: at 32, a 64-client SendMoney load opened and closed some 100 PostgreSQL
    # sessions every few seconds (README, Benchmarks > Transfer). With overflow, 128 at most.
    db_pool_size: int = 64
    # bcrypt cost of transaction PINs (12 in production; the test profile uses 4).
    pin_bcrypt_rounds: int = 12
    # Concurrent WatchNotifications streams one user may hold.
    max_watch_streams_per_user: int = 5
    # How often expired freezes (PIN lockouts, timed staff freezes) are lifted.
    freeze_sweep_seconds: float = 30.0
    # How often the outbox relay looks for due events (it is also woken after each commit).
    outbox_poll_seconds: float = 1.0
    # Idempotency records older than this are deleted (at least 24 h, ARCHITECTURE.md).
    idempotency_retention_hours: int = 48

    @field_validator("pin_bcrypt_rounds")
    @classmethod
    def _rounds_in_range(cls, value: int) -> int:
        if not 4 <= value <= 16:
            raise ValueError("must be between 4 and 16")
        return value

    @field_validator("idempotency_retention_hours")
    @classmethod
    def _keeps_a_day(cls, value: int) -> int:
        if value < 24:
            raise ValueError("must be at least 24 (hours)")
        return value
