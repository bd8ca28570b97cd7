"""End-to-end: the whole mesh as `make run` starts it, called through Envoy (JSON and gRPC)
and with grpcurl. The session-wide `mesh` fixture lives in tests/conftest.py."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    ) -> Reply:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("content-type", "application/json")
        if token:
            request.add_header("authorization", f"Bearer {token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, payload, got = response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as exc:
            status, payload, got = exc.code, exc.read(), dict(exc.headers)
        text = payload.decode() if payload else ""
        return Reply(
            status, json.loads(text) if text.strip() else {}, {k.lower(): v for k, v in got.items()}
        )

    def register(self, email: str | None = None) -> tuple[str, Reply]:
        email = email or f"e2e-{uuid.uuid4().hex[:10]}@example.com"
        reply = self.call(
            "POST", "/v1/auth/register", {"email": email, "password": PASSWORD, "fullName": "E2E"}
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
