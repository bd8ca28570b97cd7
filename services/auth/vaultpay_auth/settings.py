"""The auth service's settings (env prefix AUTH_), validated at start-up."""

from __future__ import annotations

import base64
import binascii
from functools import cached_property

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from vaultpay_common.config import ServiceSettings

__all__ = ["AuthSettings"]


class AuthSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUTH_", extra="ignore", frozen=True)

    grpc_address: str = "127.0.0.1:50051"
    # The table owner's DSN, used only by `vaultpay-auth migrate`.
    migration_database_url: SecretStr | None = None
    # The login role the service runs as; migrations grant it exactly what it needs.
    database_app_role: str = "vaultpay_auth_app"
    # base64 of 32 random bytes; encrypts signing keys at rest (AES-256-GCM) and derives the
    # password pepper. Keep it outside the database (a secret manager, or the env).
    key_encryption_key: SecretStr
    # "client_id:secret,client_id:secret" for the service identities of the mesh.
    service_clients: SecretStr = SecretStr("")
    bcrypt_rounds: int = 12
    jwt_issuer: str = "vaultpay-auth"
    jwt_audience: str = "vaultpay"
    access_token_ttl_seconds: int = 15 * 60
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    service_token_ttl_seconds: int = 10 * 60
    login_failures_per_account: int = 5
    login_failures_per_ip: int = 20
    login_failure_window_seconds: int = 15 * 60
    # How long a rotated-in key is published before it signs: longer than any verifier's JWKS
    # cache (Envoy's is 300 s).
    key_publish_lead_seconds: int = 600
    # How often each replica reloads signing keys (so a rotation reaches every replica).
    key_reload_seconds: float = 30.0

    @field_validator("key_encryption_key")
    @classmethod
    def _kek_is_32_bytes(cls, value: SecretStr) -> SecretStr:
        try:
            raw = base64.b64decode(value.get_secret_value(), validate=True)
        except binascii.Error as exc:
            raise ValueError("must be base64") from exc
        if len(raw) != 32:
            raise ValueError("must decode to exactly 32 bytes (AES-256)")
        return value

    @field_validator("bcrypt_rounds")
    @classmethod
    def _rounds_in_range(cls, value: int) -> int:
        if not 4 <= value <= 16:
            raise ValueError("must be between 4 and 16")
        return value

    @cached_property
    def kek_bytes(self) -> bytes:
        return base64.b64decode(self.key_encryption_key.get_secret_value())

    def derived_key(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose, derived (HKDF-SHA256) from the key-encryption key.

        Purposes: "password-pepper", "audit-chain".
        """
        hkdf = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=f"vaultpay-{purpose}".encode()
        )
        return hkdf.derive(self.kek_bytes)

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
