"""The auth service's settings (env prefix AUTH_), validated at start-up."""

from __future__ import annotations

from functools import cached_property

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from vaultpay_common.config import ServiceSettings

__all__ = ["AuthSettings"]


class AuthSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore", frozen=True)

    grpc_address: str = "127.0.0.1:50051"
    database_app_role: str = "vaultpay_auth_app"
    # "client_id:secret,client_id:secret" for the service identities of the mesh.
    service_clients: SecretStr = SecretStr("")
    bcrypt_rounds: int = 12
    jwt_issuer: str = "vaultpay-auth"
    jwt_audience: str = "vaultpay"
    access_token_ttl_seconds: int = 15 * 60
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    service_token_ttl_seconds: int = 10 * 60
    # How long a session and its refresh tokens are kept after the session ended (expired or
    # revoked) before the hourly cleanup deletes them; at least a day (adapters/retention.py).
    session_retention_seconds: int = Field(default=30 * 24 * 3600, ge=24 * 3600)
    login_failures_per_account: int = 5
    login_failures_per_ip: int = 20
    login_failure_window_seconds: int = 15 * 60
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
    key_publish_lead_seconds: int = 600
    # How often each replica reloads signing keys (so a rotation reaches every replica).
    key_reload_seconds: float = 30.0

    @field_validator("bcrypt_rounds")
    @classmethod
    def _rounds_in_range(cls, value: int) -> int:
        if not 4 <= value <= 16:
            raise ValueError("must be between 4 and 16")
        return value

    @cached_property
    def service_client_secrets(self) -> dict[str, str]:
        pairs = [p.strip() for p in self.service_clients.get_secret_value().split(",") if p.strip()]
        clients: dict[str, str] = {}
        for pair in pairs:
            client_id, sep, secret = pair.partition(":")
            if not sep or not client_id or len(secret) < 16:
                raise ValueError("AUTH_SERVICE_CLIENTS entries must be id:secret (16+ chars)")
            clients[client_id] = secret
        return clients
