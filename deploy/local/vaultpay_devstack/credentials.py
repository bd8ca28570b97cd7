"""Secrets of one local mesh, generated once per var dir and kept in `<var>/secrets.json` (0600).

They survive restarts (a persistent dev database keeps working with the same key-encryption key
and service credentials) and never leave the machine. Production secrets come from a secret
manager instead; nothing here has a default.

    secrets = MeshSecrets.load(Path("var"))
    secrets.service_client_secret("wallet")
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path

__all__ = ["MeshSecrets"]

FILE_NAME = "secrets.json"


class MeshSecrets:
    """Named secrets, each created on first use and persisted at once."""

    def __init__(self, path: Path, values: dict[str, str]) -> None:
        self.path = path
        self._values = values

    @classmethod
    def load(cls, var_dir: Path) -> MeshSecrets:
        path = var_dir / FILE_NAME
        values: dict[str, str] = {}
        if path.exists():
            path.chmod(0o600)
            loaded = json.loads(path.read_text())
            values = {str(k): str(v) for k, v in loaded.items()}
        return cls(path, values)

    def service_client_secret(self, client_id: str) -> str:
        """Client-credentials secret of an internal service principal (wallet, transfer, kyc)."""
        return self._get(f"service_client.{client_id}", _token)

    def gateway_secret(self, service: str) -> str:
        """The secret the gateway proves itself to `service` with: one per service, so that no
        service can vouch for a client address at another with the one it holds. (Before, one
        secret for all, kept as `service_client.gateway`; a secrets file that has it keeps it,
        unused.)"""
        return self._get(f"gateway_identity.{service}", _token)

    @property
    def auth_key_encryption_key(self) -> str:
        """Base64 of 32 random bytes: auth encrypts its private signing keys with it."""
        return self._get("auth.key_encryption_key", _key32)

    def key_encryption_key(self, service: str) -> str:
        """Base64 of 32 random bytes: a service's root key, kept outside its database."""
        if service == "auth":
            return self.auth_key_encryption_key
        return self._get(f"{service}.key_encryption_key", _key32)

    def audit_chain_key(self, database: str) -> str:
        """Base64 of 32 random bytes shared by the services of one database."""
        return self._get(f"audit_chain.{database}", _key32)

    @property
    def database_password(self) -> str:
        """Password of the mesh's login roles (owner and app role of each database)."""
        return self._get("postgres.role_password", _token)

    @property
    def postgres_superuser_password(self) -> str:
        """Password of the superuser of the private PostgreSQL."""
        return self._get("postgres.superuser_password", _token)

    @property
    def redis_password(self) -> str:
        """Password (requirepass) of the private Redis."""
        return self._get("redis.password", _token)

    def _get(self, name: str, make: Callable[[], str]) -> str:
        if name not in self._values:
            self._values[name] = make()
            self._save()
        return self._values[name]

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".json.part")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(self._values, out, indent=2, sort_keys=True)
        os.replace(partial, self.path)


def _token() -> str:
    return secrets.token_urlsafe(32)


def _key32() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()
