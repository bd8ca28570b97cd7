"""The wallet service's settings (env prefix WALLET_), validated at start-up."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from vaultpay_common.config import PoolSize, Seconds, SharedDatabaseSettings
from vaultpay_wallet.domain.currency import DEFAULT_CURRENCY, parse_currency_codes

__all__ = ["WalletSettings"]


class WalletSettings(SharedDatabaseSettings):
    model_config = SettingsConfigDict(env_prefix="WALLET_", extra="ignore", frozen=True)

    grpc_address: str = "127.0.0.1:50052"
    # One pooled connection per movement in flight, held while its call waits for a wallet
    # row's lock: at 32, a 64-client SendMoney load opened and closed some 100 PostgreSQL
    # sessions every few seconds (README, Benchmarks > Transfer). With overflow, 128 at most.
    db_pool_size: PoolSize = 64
    # bcrypt cost of transaction PINs (12 in production; the test profile uses 4).
    pin_bcrypt_rounds: int = 12
    # Concurrent WatchNotifications streams one user may hold.
    max_watch_streams_per_user: int = Field(default=5, ge=1)
    # Concurrent WatchNotifications streams one process may hold, every user's together; the
    # next is refused (RESOURCE_EXHAUSTED, WATCH_CAPACITY_REACHED) until one closes. Without
    # it, 4,000 accounts at the per-user cap held 20,000 streams in one process.
    max_watch_streams: int = Field(default=10_000, ge=1)
    # How often expired freezes (PIN lockouts, timed staff freezes) are lifted.
    freeze_sweep_seconds: Seconds = 30.0
    # How often the outbox relay looks for due events (it is also woken after each commit).
    outbox_poll_seconds: Seconds = 1.0
    # Idempotency records older than this are deleted (at least 24 h, ARCHITECTURE.md).
    idempotency_retention_hours: int = 48
    # PIN reset tokens, IP confirmations and trusted IPs are deleted this long after they
    # expire (by the hourly cleanup; nothing reads an expired one as live). At least 1.
    expired_row_retention_hours: int = 24
    # Notifications are deleted this long after they were created, read or not (by the hourly
    # cleanup). A notification is only a message: the ledger's transactions are the record of
    # money. From 1 to 3650 (ten years).
    notification_retention_days: int = 180
    # The currencies a wallet may be opened in, comma separated ("INR,USD"; INR must be one):
    # CreateWallet refuses any other (INVALID_ARGUMENT naming currency_code). A malformed value
    # stops the service at start-up. The tier limits (settings `limits.tier_*`) and transfer's
    # TRANSFER_MAX_AMOUNT_MINOR are plain minor units applied alike to every supported
    # currency: 10,000,000 is 1 lakh rupees, 10 million yen or 10,000 dinars. Add a currency
    # only with limits meant for it too (per-currency limits are not built). Wallets already
    # open in a currency later dropped from the list keep working.
    currencies: Annotated[frozenset[str], NoDecode] = frozenset({DEFAULT_CURRENCY})

    @field_validator("currencies", mode="before")
    @classmethod
    def _iso_codes(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_currency_codes(value)
        if isinstance(value, (set, frozenset, list, tuple)):
            return parse_currency_codes(",".join(str(v) for v in value))
        return value

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

    @field_validator("expired_row_retention_hours")
    @classmethod
    def _keeps_an_hour(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1 (hour)")
        return value

    @field_validator("notification_retention_days")
    @classmethod
    def _keeps_a_day_to_ten_years(cls, value: int) -> int:
        if not 1 <= value <= 3650:
            raise ValueError("must be between 1 and 3650 (days)")
        return value
