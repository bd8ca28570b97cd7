"""The auth service's settings (env prefix AUTH_), validated at start-up."""

from __future__ import annotations

from functools import cached_property

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from vaultpay_common.config import Seconds, ServiceSettings
from vaultpay_common.grpc.tokens import DEFAULT_MAX_TOKEN_LIFETIME

__all__ = ["AuthSettings", "parse_service_clients"]


class AuthSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore", frozen=True)

    grpc_address: str = "127.0.0.1:50051"
    database_app_role: str = "vaultpay_auth_app"
    # "client_id:secret,client_id:secret" for the service identities of the mesh (each secret
    # 16+ characters, each id once); a malformed value stops auth at start-up.
    service_clients: SecretStr = SecretStr("")
    bcrypt_rounds: int = 12
    jwt_issuer: str = "vaultpay-auth"
    jwt_audience: str = "vaultpay"
    # Access and service tokens: at most DEFAULT_MAX_TOKEN_LIFETIME (900 s), the longest
    # lifetime wallet, transfer and kyc accept (vaultpay_common.grpc.tokens); a longer one
    # would make every call to them UNAUTHENTICATED.
    access_token_ttl_seconds: int = 15 * 60
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=1)
    service_token_ttl_seconds: int = 10 * 60
    # How long a session and its refresh tokens are kept after the session ended (expired or
    # revoked) before the hourly cleanup deletes them; at least a day (adapters/retention.py).
    session_retention_seconds: int = Field(default=30 * 24 * 3600, ge=24 * 3600)
    login_failures_per_account: int = Field(default=5, ge=1)
    login_failures_per_ip: int = Field(default=20, ge=1)
    login_failure_window_seconds: int = Field(default=15 * 60, ge=1)
    # Register attempts (a taken email included), counted before any lookup or hash: per client
    # address (Firebase Auth allows 100 new accounts per IP address and hour) and for the whole
    # service (shared by every replica through Redis).
    register_per_ip: int = Field(default=100, ge=1)
    register_per_ip_window_seconds: int = Field(default=3600, ge=1)
    register_global: int = Field(default=600, ge=1)
    register_global_window_seconds: int = Field(default=60, ge=1)
    # How many bcrypt computations may wait for a worker, per process. Sign-ins (login,
    # password change) are served before sign-ups and sign-ups never hold the last worker;
    # beyond these bounds a call is refused at once (RESOURCE_EXHAUSTED + RetryInfo) rather
    # than queued past any client's deadline.
    bcrypt_max_waiting_sign_ins: int = Field(default=128, ge=0)
    bcrypt_max_waiting_sign_ups: int = Field(default=16, ge=0)
    # How long a rotated-in key is published before it signs: longer than any verifier's JWKS
    # cache (Envoy's is 60 s).
    key_publish_lead_seconds: int = Field(default=600, ge=0)
    # How often each replica reloads signing keys (so a rotation reaches every replica).
    key_reload_seconds: Seconds = 30.0
    # The revocation feed answers "v3" cursors (its snapshot's running transactions: a long
    # transaction no longer makes every poll re-send everything since it began). A build
    # before them refuses a v3 cursor and its peers start over from the look-back: during a
    # rolling update from such a build set False (v2 cursors, which every build reads), and
    # True once every auth replica runs this build.
    feed_snapshot_cursors: bool = True

    @field_validator("bcrypt_rounds")
    @classmethod
    def _rounds_in_range(cls, value: int) -> int:
        if not 4 <= value <= 16:
            raise ValueError("must be between 4 and 16")
        return value

    @field_validator("access_token_ttl_seconds", "service_token_ttl_seconds")
    @classmethod
    def _verifiable_by_every_service(cls, value: int) -> int:
        if not 0 < value <= DEFAULT_MAX_TOKEN_LIFETIME:
            raise ValueError(
                f"must be above 0 and at most {DEFAULT_MAX_TOKEN_LIFETIME} (seconds): wallet,"
                " transfer and kyc refuse a token that lives longer"
            )
        return value

    @field_validator("service_clients")
    @classmethod
    def _well_formed_clients(cls, value: SecretStr) -> SecretStr:
        parse_service_clients(value.get_secret_value())
        return value

    @cached_property
    def service_client_secrets(self) -> dict[str, str]:
        return parse_service_clients(self.service_clients.get_secret_value())


def parse_service_clients(text: str) -> dict[str, str]:
    """{client id: secret} of AUTH_SERVICE_CLIENTS ("id:secret,id:secret"; blanks around an
    entry and empty entries ignored), or ValueError naming the entry by its position, never
    its text (which holds a secret)."""
    clients: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    entries = [e.strip() for e in text.split(",") if e.strip()]
    for position, entry in enumerate(entries, start=1):
        client_id, sep, secret = entry.partition(":")
        if not sep or not client_id or len(secret) < 16:
            raise ValueError(
                f"entry {position} of {len(entries)} is not id:secret with a secret of 16+"
                " characters"
            )
        if client_id in clients:
            raise ValueError(
                f"entries {first_seen[client_id]} and {position} name the same client id"
            )
        clients[client_id] = secret
        first_seen[client_id] = position
    return clients
