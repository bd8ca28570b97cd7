"""End-to-end: the whole mesh as `make run` starts it, called through Envoy (JSON and gRPC)
and with grpcurl. The session-wide `mesh` fixture lives in tests/conftest.py."""

from __future__ import annotations

import http.client
import json
import secrets
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from vaultpay_devstack.mesh import Mesh

PASSWORD = "correct horse 42 battery"
GRPCURL = str(Path(sys.executable).parent / "grpcurl")


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]

    def error_reason(self) -> str:
        for detail in self.body.get("details", []):
            if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
                return str(detail.get("reason", ""))
        return ""

    def field_violations(self) -> list[str]:
        for detail in self.body.get("details", []):
            if detail.get("@type", "").endswith("google.rpc.BadRequest"):
                return [v["field"] for v in detail.get("fieldViolations", [])]
        return []


def random_loopback() -> str:
    """An address of 127.0.0.0/8 other than 127.0.0.1: every one reaches a loopback listener."""
    return f"127.{secrets.randbelow(254) + 1}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


class Gateway:
    """A tiny JSON client for the gateway (urllib only: what a web client does)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        source: str | None = None,
    ) -> Reply:
        """One HTTP call; `source` is the loopback address to call from (a client of its own)."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        sent = {"content-type": "application/json"} if data is not None else {}
        if token:
            sent["authorization"] = f"Bearer {token}"
        sent.update(headers or {})
        parts = urlsplit(self.base_url)
        connection = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1",
            parts.port or 80,
            timeout=10,
            source_address=(source, 0) if source else None,
        )
        try:
            connection.request(method, path, body=data, headers=sent)
            response = connection.getresponse()
            status, payload, got = response.status, response.read(), response.getheaders()
        finally:
            connection.close()
        text = payload.decode() if payload else ""
        return Reply(
            status, json.loads(text) if text.strip() else {}, {k.lower(): v for k, v in got}
        )

    def register(self, email: str | None = None) -> tuple[str, Reply]:
        email = email or f"e2e-{uuid.uuid4().hex[:10]}@example.com"
        # Each person signs up from a machine of their own (auth counts sign-ups per address).
        reply = self.call(
            "POST",
            "/v1/auth/register",
            {"email": email, "password": PASSWORD, "fullName": "E2E"},
            source=random_loopback(),
        )
        return email, reply

    def login(self, email: str) -> dict[str, Any]:
        reply = self.call("POST", "/v1/auth/login", {"email": email, "password": PASSWORD})
        assert reply.status == 200, reply.body
        tokens: dict[str, Any] = reply.body["tokens"]
        return tokens

    def user_token(self) -> str:
        email, reply = self.register()
        assert reply.status == 200, reply.body
        return str(self.login(email)["accessToken"])


@pytest.fixture(scope="session")
def gateway(mesh: Mesh) -> Gateway:
    return Gateway(mesh.gateway_url)
