"""Emergency withdrawal of the signing key, end to end (security review finding 3).

An operator withdraws the key that signs access tokens with the real CLI. Within seconds a user
signs in through Envoy and is served: auth heard of the withdrawal at once (NOTIFY) and signs
with the standby, a key Envoy fetched with the JWKS long before the emergency (it caches the
JWKS for minutes and does not refetch on an unknown `kid`). Tokens of the withdrawn key are
refused by the service, whatever the gateway's cache still holds.

This runs on a mesh of its own: a withdrawal ends every token the key signed, the other
services' service tokens included, so the session-wide mesh would be left to recover on the
other services' own time while later tests run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import jwt
import pytest

from tests.e2e.conftest import Gateway
from vaultpay_devstack.infra import Infra, scratch_dir
from vaultpay_devstack.mesh import Mesh, MeshConfig
from vaultpay_devstack.postgres import unique_suffix

T = TypeVar("T")
# A deadline for a busy machine, not a measure of speed: a withdrawal takes effect in about a
# second (NOTIFY). The failure this test was written for, Envoy refusing every new token for
# about 5 minutes (a new key it had not fetched), still fails it at the deadline.
WITHIN_SECONDS = 30.0


@pytest.fixture(scope="module")
def own_mesh(infra: Infra) -> Iterator[Mesh]:
    """auth and Envoy, on the session's PostgreSQL under their own database names."""
    var_dir = scratch_dir("vaultpay-keys-")
    config = MeshConfig.for_tests(
        var_dir,
        postgres_admin_url=infra.postgres.admin_dsn,
        redis_url=MeshConfig.from_env(profile="test").redis_url,
        database_suffix=unique_suffix("keys"),
        drop_databases_on_stop=True,
        services=("auth",),
    )
    try:
        with Mesh(config) as running:
            yield running
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


def _vaultpay_auth(mesh: Mesh, *args: str) -> subprocess.CompletedProcess[str]:
    """The operator's CLI, run with the environment the mesh gave the auth service."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "vaultpay-auth"), *args],
        env={**os.environ, **mesh.env_for("auth")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def _eventually(check: Callable[[], T | None], *, within: float, what: str) -> T:
    deadline = time.monotonic() + within
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.1)


def test_after_withdrawing_the_signing_key_users_sign_in_and_are_served_within_seconds(
    own_mesh: Mesh,
) -> None:
    gateway = Gateway(own_mesh.gateway_url)
    email, registered = gateway.register()
    assert registered.status == 200, registered.body
    old = str(gateway.login(email)["accessToken"])
    assert gateway.call("GET", "/v1/auth/me", token=old).status == 200
    withdrawn = _kid(old)
    published_before = {key["kid"] for key in gateway.call("GET", "/v1/auth/jwks").body["keys"]}
    assert withdrawn in published_before
    assert len(published_before) >= 2, "a standby is published besides the signing key"

    result = _vaultpay_auth(own_mesh, "withdraw-signing-key", "--kid", withdrawn)
    assert result.returncode == 0, result.stderr
    assert "signs now" in result.stdout

    def served() -> str | None:
        token = str(gateway.login(email)["accessToken"])
        if _kid(token) == withdrawn:
            return None
        me = gateway.call("GET", "/v1/auth/me", token=token)
        return token if me.status == 200 else None

    new = _eventually(served, within=WITHIN_SECONDS, what="a new token is served by the gateway")
    assert _kid(new) in published_before  # the standby every verifier already held

    # The gateway may still hold the withdrawn key; the service refuses its tokens.
    refused = gateway.call("GET", "/v1/auth/me", token=old)
    assert refused.status == 401
    assert refused.error_reason() == "TOKEN_INVALID"
    published_after = {key["kid"] for key in gateway.call("GET", "/v1/auth/jwks").body["keys"]}
    assert withdrawn not in published_after
    assert published_after - published_before, "a new standby for the next emergency"
