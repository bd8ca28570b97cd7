"""Composition root of the auth service: builds everything inside the event loop.

python -m vaultpay_auth.entrypoints.server
"""

from __future__ import annotations

import logging
from datetime import timedelta

from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay_auth.adapters.password_estimate import ThreadedPasswordEstimator
from vaultpay_auth.adapters.passwords import BcryptPasswordHasher
from vaultpay_auth.adapters.repositories import SqlAuthUnitOfWork
from vaultpay_auth.adapters.retention import purge_ended_sessions
from vaultpay_auth.adapters.revocations import PgRevocationNotices, SqlRevocationFeed
from vaultpay_auth.adapters.signing import JwtIssuer, KeyRing
from vaultpay_auth.adapters.throttle import RedisLoginThrottle, RedisSignUpThrottle
from vaultpay_auth.domain.security_events import EmailFingerprint
from vaultpay_auth.entrypoints.cli import cli
from vaultpay_auth.entrypoints.servicers import (
    AuthAdminServicer,
    AuthInternalServicer,
    AuthServicer,
)
from vaultpay_auth.service_layer.accounts import AccountService
from vaultpay_auth.service_layer.admin import AdminService
from vaultpay_auth.service_layer.introspection import LocalIntrospector, ServiceIdentityService
from vaultpay_auth.service_layer.revocations import RevocationFeedService
from vaultpay_auth.settings import AuthSettings
from vaultpay_common.grpc.server import GrpcServiceHost, run_service
from vaultpay_common.grpc.tokens import TokenVerifier
from vaultpay_common.runtime import ServiceRuntime

__all__ = ["build_host", "main"]

log = logging.getLogger(__name__)

SERVICES = [
    auth_pb2.DESCRIPTOR.services_by_name[name]
    for name in ("AuthService", "AuthAdminService", "AuthInternalService")
]


async def build_host(settings: AuthSettings) -> GrpcServiceHost:
    runtime = ServiceRuntime("auth", settings)
    access_ttl = timedelta(seconds=settings.access_token_ttl_seconds)
    keys = KeyRing(
        runtime.engine, settings.kek_bytes, verify_window=access_ttl + timedelta(minutes=5)
    )
    await keys.ensure_active()
    # LISTENs for key changes (a withdrawal reaches this replica at once) and reloads at least
    # every key_reload_seconds; restarted by the runtime if its connection drops.
    runtime.every(
        settings.key_reload_seconds,
        lambda: keys.watch(settings.key_reload_seconds),
        name="signing key watch",
    )
    issuer = JwtIssuer(
        keys,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=access_ttl,
        service_ttl=timedelta(seconds=settings.service_token_ttl_seconds),
    )

    async def local_jwks() -> list[dict[str, str]]:
        return keys.jwks()  # kept current by the key watch; no database round trip

    # In-memory keys: no need to rate-limit refreshes, and a key this process just started
    # signing with must verify at once.
    verifier = TokenVerifier(
        local_jwks,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        service="auth",
        accept_unscoped_service_tokens=settings.accept_unscoped_service_tokens,
        min_refresh_interval=0,
        max_key_age=settings.key_reload_seconds,
        max_token_lifetime=max(
            settings.access_token_ttl_seconds, settings.service_token_ttl_seconds
        ),
    )
    # A withdrawn key's tokens (cached ones too) are refused as soon as the ring reloads.
    keys.on_change(lambda: verifier.refresh_keys(force=True))
    hasher = BcryptPasswordHasher(
        settings.derived_key("password-pepper"),
        settings.bcrypt_rounds,
        max_waiting_sign_ins=settings.bcrypt_max_waiting_sign_ins,
        max_waiting_sign_ups=settings.bcrypt_max_waiting_sign_ups,
    )
    estimator = ThreadedPasswordEstimator()  # off the loop (adapters/password_estimate)
    throttle = RedisLoginThrottle(
        runtime.redis,
        per_account=settings.login_failures_per_account,
        per_ip=settings.login_failures_per_ip,
        window_seconds=settings.login_failure_window_seconds,
    )
    sign_ups = RedisSignUpThrottle(
        runtime.redis,
        per_ip=settings.register_per_ip,
        per_ip_window_seconds=settings.register_per_ip_window_seconds,
        global_limit=settings.register_global,
        global_window_seconds=settings.register_global_window_seconds,
    )
    # Emails in audit rows are keyed hashes (a purpose key of their own).
    fingerprint = EmailFingerprint(settings.derived_key("audit-email"))

    def uow() -> SqlAuthUnitOfWork:
        return SqlAuthUnitOfWork(runtime.engine, settings.audit_key)

    accounts = AccountService(
        uow,
        hasher,
        issuer,
        throttle,
        refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
        sign_up_throttle=sign_ups,
        fingerprint=fingerprint,
        estimator=estimator,
    )
    introspector = LocalIntrospector(uow, verifier)
    identities = ServiceIdentityService(settings.service_client_secrets, issuer)
    admin = AdminService(uow, fingerprint=fingerprint)
    # The revocation feed peers poll: it must reach back past the longest-lived access token
    # (plus clock leeway); its rows are purged once twice that old.
    feed_table = SqlRevocationFeed(runtime.engine)
    look_back = access_ttl + timedelta(minutes=5)
    # Peers long-poll the feed: LISTEN wakes their held polls when a revocation commits;
    # restarted by the runtime if its connection drops (polls are not held meanwhile).
    notices = PgRevocationNotices(runtime.engine)
    runtime.every(1.0, notices.listen, name="revocation notices")
    revocations = RevocationFeedService(
        feed_table,
        look_back=look_back,
        notices=notices,
        snapshot_cursors=settings.feed_snapshot_cursors,
    )

    async def purge_revocations() -> None:
        await feed_table.purge(2 * look_back)

    # Sessions (and their refresh tokens) that ended more than the retention ago.
    session_retention = timedelta(seconds=settings.session_retention_seconds)

    async def purge_sessions() -> None:
        await purge_ended_sessions(runtime.engine, retention=session_retention)

    async def close_hasher() -> None:
        hasher.close()
        estimator.close()

    async def settle_password_checks() -> None:
        await accounts.drain(within=10.0)

    runtime.on_shutdown(close_hasher)
    runtime.on_shutdown(settle_password_checks)  # runs first: before the hasher closes
    runtime.seal_audit()
    runtime.every(3600.0, purge_revocations, name="revocation feed purge")
    runtime.every(3600.0, purge_sessions, name="ended session purge")
    # No revocation set: every call asks the database (always_strict) whether its session lives.
    host = runtime.host(SERVICES, verifier, introspector, revocations=None, always_strict=True)
    tokens = runtime.page_tokens
    host.add(
        SERVICES[0],
        lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(accounts, keys), s),
    )
    host.add(
        SERVICES[1],
        lambda s: auth_pb2_grpc.add_AuthAdminServiceServicer_to_server(
            AuthAdminServicer(admin, tokens), s
        ),
    )
    host.add(
        SERVICES[2],
        lambda s: auth_pb2_grpc.add_AuthInternalServiceServicer_to_server(
            AuthInternalServicer(introspector, identities, admin, revocations), s
        ),
    )
    return host


def main() -> None:
    run_service("auth", AuthSettings, build_host, schema=cli.chains)


if __name__ == "__main__":
    main()
