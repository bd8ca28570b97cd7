"""The gateway's typed settings: everything the rendered Envoy config depends on.

Defaults are the local development layout (API.md: gateway 8080, auth 50051 … kyc 50054),
all bound to loopback. Values are validated when the object is built, so a bad flag fails at
start-up with a readable message instead of as an Envoy parse error.

    settings = GatewaySettings(
        descriptor_set=Path("build/vaultpay.binpb"),
        upstreams={**DEFAULT_UPSTREAMS, "auth": HostPort("10.0.0.5", 50051)},
    )
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

__all__ = [
    "DEFAULT_UPSTREAMS",
    "GatewaySettings",
    "HealthCheck",
    "HostPort",
    "JwtSettings",
    "RateLimit",
    "SettingsError",
]


class SettingsError(ValueError):
    """A gateway setting is invalid."""


@dataclass(frozen=True, slots=True)
class HostPort:
    """A TCP address; `host` is an IP literal or a DNS name."""

    host: str
    port: int

    def __post_init__(self) -> None:
        if not self.host:
            raise SettingsError("empty host")
        if not 0 < self.port < 65536:
            raise SettingsError(f"port out of range: {self.port}")

    @classmethod
    def parse(cls, text: str) -> HostPort:
        """Parses `host:port` (`[v6]:port` for IPv6 literals)."""
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise SettingsError(f"expected host:port, got {text!r}")
        return cls(host.removeprefix("[").removesuffix("]"), int(port))

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


DEFAULT_UPSTREAMS: Mapping[str, HostPort] = MappingProxyType(
    {
        "auth": HostPort("127.0.0.1", 50051),
        "wallet": HostPort("127.0.0.1", 50052),
        "transfer": HostPort("127.0.0.1", 50053),
        "kyc": HostPort("127.0.0.1", 50054),
    }
)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The global token bucket of the local rate limit filter (per Envoy worker set)."""

    max_tokens: int = 2000
    tokens_per_fill: int = 1000
    fill_interval_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.tokens_per_fill < 1:
            raise SettingsError("rate limit tokens must be positive")
        if self.fill_interval_seconds < 0.001:
            raise SettingsError("rate limit fill interval must be at least 1 ms")


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """Active gRPC health checking of every upstream (GATEWAY.md item 10)."""

    interval_seconds: float = 5.0
    unhealthy_interval_seconds: float = 2.0
    no_traffic_interval_seconds: float = 5.0
    timeout_seconds: float = 1.0
    unhealthy_threshold: int = 2
    healthy_threshold: int = 1


@dataclass(frozen=True, slots=True)
class JwtSettings:
    """Edge verification of access tokens issued by auth.

    `jwks_rpc` names the RPC whose HTTP GET binding serves the JWK Set; the gateway fetches it
    through a Unix-socket listener of the gateway that transcodes it like any client call.
    Fetched keys stay in use until a refresh succeeds, so an auth outage does not lock
    clients out; a failed refresh is retried every `jwks_failed_refetch_seconds`.
    """

    issuer: str = "vaultpay-auth"
    audience: str = "vaultpay"
    jwks_rpc: str = "vaultpay.auth.v1.AuthService.GetJwks"
    jwks_cache_seconds: int = 300
    jwks_failed_refetch_seconds: float = 2.0
    clock_skew_seconds: int = 30

    def __post_init__(self) -> None:
        if not self.issuer or not self.audience:
            raise SettingsError("JWT issuer and audience are required")
        if self.jwks_cache_seconds < 1:
            raise SettingsError("JWKS cache duration must be positive")


def _default_upstreams() -> Mapping[str, HostPort]:
    return DEFAULT_UPSTREAMS


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything the gateway's Envoy bootstrap is rendered from."""

    descriptor_set: Path
    listen: HostPort = HostPort("127.0.0.1", 8080)
    admin: HostPort = HostPort("127.0.0.1", 9901)
    upstreams: Mapping[str, HostPort] = field(default_factory=_default_upstreams)
    cors_origins: tuple[str, ...] = ()
    max_request_bytes: int = 1 << 20
    rate_limit: RateLimit = RateLimit()
    access_log_path: Path | None = None
    jwt: JwtSettings = JwtSettings()
    health_check: HealthCheck = HealthCheck()
    unary_timeout_seconds: float = 15.0
    # Proxies in front of the gateway (an ingress or load balancer) whose x-forwarded-for
    # entries are trusted for the client address; 0 when clients connect directly.
    trusted_proxy_hops: int = 0
    stream_idle_timeout_seconds: float = 3600.0
    jwks_socket_path: str | None = None
    # Serve Swagger UI and the OpenAPI document under /docs (public).
    serve_docs: bool = True
    # The reflection server (`python -m vaultpay_gateway.reflection`) that answers gRPC
    # server reflection for the public API through the gateway; None: reflection is not routed.
    reflection: HostPort | None = None

    @property
    def jwks_socket(self) -> str:
        """The Unix socket of the JWKS-only listener.

        Default: a Linux abstract socket named after the public listener (no file to clean
        up, no TCP port to allocate). It only serves the public JWK Set.
        """
        if self.jwks_socket_path is not None:
            return self.jwks_socket_path
        return f"@vaultpay-gateway-jwks-{self.listen.host}-{self.listen.port}"

    def __post_init__(self) -> None:
        if self.max_request_bytes < 1:
            raise SettingsError("max_request_bytes must be positive")
        if not 0 <= self.trusted_proxy_hops <= 5:
            raise SettingsError("trusted_proxy_hops must be between 0 and 5")
        if self.unary_timeout_seconds <= 0:
            raise SettingsError("unary_timeout_seconds must be positive")
        for origin in self.cors_origins:
            if origin == "*" or "://" not in origin or origin.endswith("/"):
                raise SettingsError(
                    f"CORS origin must be an exact scheme://host[:port], got {origin!r}"
                )
        object.__setattr__(self, "upstreams", MappingProxyType(dict(self.upstreams)))
