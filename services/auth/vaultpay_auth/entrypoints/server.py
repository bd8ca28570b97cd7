"""Composition root of the auth service: builds everything inside the event loop.

python -m vaultpay_auth.entrypoints.server
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay_auth.adapters.passwords import BcryptPasswordHasher
from vaultpay_auth.adapters.repositories import SqlAuthUnitOfWork
from vaultpay_auth.adapters.signing import JwtIssuer, KeyRing
from vaultpay_auth.adapters.throttle import RedisLoginThrottle
from vaultpay_auth.entrypoints.servicers import (
    AuthAdminServicer,
    AuthInternalServicer,
    AuthServicer,
)
from vaultpay_auth.service_layer.accounts import AccountService
from vaultpay_auth.service_layer.admin import AdminService
from vaultpay_auth.service_layer.introspection import LocalIntrospector, ServiceIdentityService
from vaultpay_auth.settings import AuthSettings
from vaultpay_common.db import create_engine
from vaultpay_common.grpc.server import GrpcServiceHost, run_service, standard_interceptors
from vaultpay_common.grpc.tokens import TokenVerifier
from vaultpay_common.logging import configure_logging
from vaultpay_common.redis import create_redis

__all__ = ["build_host", "main"]

log = logging.getLogger(__name__)

SERVICES = [
    auth_pb2.DESCRIPTOR.services_by_name[name]
    for name in ("AuthService", "AuthAdminService", "AuthInternalService")
]


async def _reload_keys_forever(keys: KeyRing, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await keys.reload()
        except Exception:
            log.warning("signing key reload failed", exc_info=True)


async def build_host(settings: AuthSettings) -> GrpcServiceHost:
    engine = create_engine(
        settings.database_url.get_secret_value(),
        pool_size=settings.db_pool_size,
        application_name="vaultpay-auth",
        statement_timeout_ms=settings.db_statement_timeout_ms,
    )
    redis = create_redis(settings.redis_url.get_secret_value())
    access_ttl = timedelta(seconds=settings.access_token_ttl_seconds)
    keys = KeyRing(engine, settings.kek_bytes, verify_window=access_ttl + timedelta(minutes=5))
    await keys.ensure_active()
    issuer = JwtIssuer(
        keys,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=access_ttl,
        service_ttl=timedelta(seconds=settings.service_token_ttl_seconds),
    )

    async def local_jwks() -> list[dict[str, str]]:
        return keys.jwks()  # kept current by the reloader below; no database round trip

    # In-memory keys: no need to rate-limit refreshes, and a key this process just started
    # signing with must verify at once.
    verifier = TokenVerifier(
        local_jwks,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        min_refresh_interval=0,
        max_key_age=settings.key_reload_seconds,
    )
    hasher = BcryptPasswordHasher(settings.derived_key("password-pepper"), settings.bcrypt_rounds)
    throttle = RedisLoginThrottle(
        redis,
        per_account=settings.login_failures_per_account,
        per_ip=settings.login_failures_per_ip,
        window_seconds=settings.login_failure_window_seconds,
    )

    audit_key = settings.derived_key("audit-chain")

    def uow() -> SqlAuthUnitOfWork:
        return SqlAuthUnitOfWork(engine, audit_key)

    accounts = AccountService(
        uow,
        hasher,
        issuer,
        throttle,
        refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
    )
    introspector = LocalIntrospector(uow, verifier)
    identities = ServiceIdentityService(settings.service_client_secrets, issuer)

    host = GrpcServiceHost(
        "auth",
        address=settings.grpc_address,
        interceptors=standard_interceptors(
            "auth", SERVICES, verifier, introspector, always_strict=True
        ),
        max_message_bytes=settings.max_message_bytes,
        shutdown_grace_seconds=settings.shutdown_grace_seconds,
    )
    host.add(
        SERVICES[0],
        lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(accounts, keys), s),
    )
    host.add(
        SERVICES[1],
        lambda s: auth_pb2_grpc.add_AuthAdminServiceServicer_to_server(
            AuthAdminServicer(AdminService(uow)), s
        ),
    )
    host.add(
        SERVICES[2],
        lambda s: auth_pb2_grpc.add_AuthInternalServiceServicer_to_server(
            AuthInternalServicer(introspector, identities, AdminService(uow)), s
        ),
    )

    reloader = asyncio.create_task(_reload_keys_forever(keys, settings.key_reload_seconds))

    async def stop_reloader() -> None:
        reloader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reloader

    async def close_hasher() -> None:
        hasher.close()

    host.on_shutdown(stop_reloader)
    host.on_shutdown(engine.dispose)
    host.on_shutdown(redis.aclose)
    host.on_shutdown(close_hasher)
    return host


async def _serve() -> None:
    settings = AuthSettings()
    configure_logging("auth", settings.log_level)
    host = await build_host(settings)
    await host.start()
    await host.serve_until_signal()


def main() -> None:
    run_service(_serve)


if __name__ == "__main__":
    main()
