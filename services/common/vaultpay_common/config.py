"""Typed settings, validated at start-up. Each service subclasses `ServiceSettings` with its
own env prefix (AUTH_, WALLET_, …); nothing else in the code reads os.environ.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Profile", "ServiceSettings", "SmtpSettings"]


class Profile(StrEnum):
    DEV = "dev"
    TEST = "test"
    PROD = "prod"


class ServiceSettings(BaseSettings):
    """Settings every gRPC service has."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    profile: Profile = Field(default=Profile.PROD, validation_alias="VAULTPAY_PROFILE")
    grpc_address: str = "127.0.0.1:0"
    log_level: str = "INFO"
    database_url: SecretStr
    redis_url: SecretStr
    # How long in-flight calls may finish after SIGTERM before they are cancelled.
    shutdown_grace_seconds: float = 10.0
    # Largest request/response message; KYC uploads stream in chunks below this.
    max_message_bytes: int = 4 * 1024 * 1024
    db_pool_size: int = 10
    # Upper bound of any SQL statement when the caller gave no (shorter) deadline.
    db_statement_timeout_ms: int = 10_000


class SmtpSettings(BaseSettings):
    """Where outgoing mail goes (a local sink in development)."""

    model_config = SettingsConfigDict(env_prefix="VAULTPAY_SMTP_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = 1025
    sender: str = "VaultPay <no-reply@vaultpay.local>"
