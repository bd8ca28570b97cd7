"""The gateway's typed settings: everything the rendered Envoy config depends on.

Defaults are the local development layout (API.md: gateway 8080, auth 50051 … kyc 50054),
all bound to loopback. Values are validated when the object is built, so a bad flag fails at
start-up with a readable message instead of as an Envoy parse error.

Rate limits are token buckets (`RateLimit`): one global bucket as a backstop, one per client
address (`client_rate_limit`) and, tighter, one per client address and expensive RPC
(`rpc_rate_limits`, keyed by the RPC's full name; `DEFAULT_RPC_RATE_LIMITS`: the expensive
public ones, and RequestPinReset, which mails).

Bodies are capped at `max_request_bytes` (1 MiB) and JSON replies at `max_json_response_bytes`;
the RPCs that carry a KYC document file get larger caps and a longer timeout (`rpc_limits`,
`RpcLimits`), all derived from one number, the file cap (`kyc_file_limits`, whose default is
kyc's own `KYC_DOCUMENT_MAX_BYTES`):

    GatewaySettings(descriptor_set=..., rpc_limits=kyc_file_limits(20 * MiB))

    settings = GatewaySettings(
        descriptor_set=Path("build/vaultpay.binpb"),
        upstreams={**DEFAULT_UPSTREAMS, "auth": HostPort("10.0.0.5", 50051)},
    )
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

__all__ = [
    "DEFAULT_RPC_LIMITS",
    "DEFAULT_RPC_RATE_LIMITS",
    "DEFAULT_UPSTREAMS",
    "GATEWAY_SECRET_ENV_PREFIX",
    "KYC_DOCUMENT_MAX_BYTES",
    "KYC_FILE_TIMEOUT_SECONDS",
    "GatewaySettings",
    "HealthCheck",
    "HostPort",
    "JwtSettings",
    "MiB",
    "RateLimit",
    "RpcLimits",
    "SettingsError",
    "UnixSocket",
    "base64_size",
    "gateway_secret_env",
    "identity_env_problems",
    "kyc_file_limits",
]

# Where Envoy reads the secrets it proves its identity to the services with: one variable per
# upstream, this prefix and the upstream's name (`gateway_secret_env`: auth's is
# VAULTPAY_GATEWAY_SECRET_AUTH; see `GatewaySettings.identity_secret_env_prefix`). The prefix
# alone named the one secret every service shared before; it is refused now
# (`identity_env_problems`).
GATEWAY_SECRET_ENV_PREFIX = "VAULTPAY_GATEWAY_SECRET"  # noqa: S105 - a variable name, not a secret
# What the services require of their secret (vaultpay_common's MIN_GATEWAY_SECRET_LENGTH; the
# gateway does not import the services' code, a test keeps the two equal).
_MIN_GATEWAY_SECRET_LENGTH = 32
# Linux: sun_path is 108 bytes, NUL included.
_MAX_SOCKET_PATH = 107
MiB = 1 << 20
# Envoy keeps body and buffer sizes in 32-bit fields; nothing here needs more than this.
# The most request-header bytes (names and values) the edge lets through: within the
# services' and the reflection server's gRPC metadata limit (24 KiB soft) with the original
# path (`max_path_bytes`, up to 2 KiB) again, Envoy's headers and 32 bytes per entry.
MAX_HEADER_BYTES = 12 * 1024
_MAX_BODY_CAP = 1 << 30


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


@dataclass(frozen=True, slots=True)
class UnixSocket:
    """A Unix domain socket (a file path) and the permission bits Envoy gives it."""

    path: Path
    mode: int = 0o600

    def __post_init__(self) -> None:
        if not self.path.is_absolute():
            raise SettingsError(f"Unix socket path must be absolute: {self.path}")
        if len(str(self.path).encode()) > _MAX_SOCKET_PATH:
            raise SettingsError(f"Unix socket path longer than {_MAX_SOCKET_PATH} bytes")
        if not 0 <= self.mode <= 0o777:
            raise SettingsError(f"bad socket mode {oct(self.mode)}")

    def __str__(self) -> str:
        return f"unix:{self.path}"


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
    """A token bucket of the local rate limit filter (shared by Envoy's workers).

    It holds up to `max_tokens`; `tokens_per_fill` come back every `fill_interval_seconds`
    (Envoy refills continuously at that rate). A request takes one token.

        RateLimit.per_minute(10, burst=5)   # 5 at once, then one every 6 s
    """

    max_tokens: int = 2000
    tokens_per_fill: int = 1000
    fill_interval_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.tokens_per_fill < 1:
            raise SettingsError("rate limit tokens must be positive")
        if self.fill_interval_seconds < 0.05:
            # Envoy refuses shorter intervals.
            raise SettingsError("rate limit fill interval must be at least 50 ms")

    @classmethod
    def per_minute(cls, rate: int, *, burst: int | None = None) -> RateLimit:
        """`rate` tokens a minute, one at a time, and up to `burst` (default `rate`) at once."""
        if rate < 1:
            raise SettingsError("rate limit tokens must be positive")
        return cls(max_tokens=burst or rate, tokens_per_fill=1, fill_interval_seconds=60 / rate)

    @property
    def retry_after_seconds(self) -> int:
        """The longest wait for the next token, in whole seconds (what `Retry-After` says)."""
        return max(1, math.ceil(self.fill_interval_seconds / self.tokens_per_fill))


# Per client address: the public RPCs that cost the services most (bcrypt, mail, database
# writes) or guard secrets, and RequestPinReset, which needs a session but mails the user
# (wallet also holds each user to one code a minute and five an hour: PIN_RESET_RATE_LIMITED),
# and SetPin and ChangePin, which need a session but each hash a PIN at the production cost
# (a burst of them from fresh accounts queued hashing in front of wallet's money movements:
# wallet now keeps those apart and bounds the owner's queue; this keeps one address's floods
# off it). Everything else shares the client's general bucket.
DEFAULT_RPC_RATE_LIMITS: Mapping[str, RateLimit] = MappingProxyType(
    {
        "vaultpay.auth.v1.AuthService.Register": RateLimit.per_minute(2, burst=5),
        "vaultpay.auth.v1.AuthService.Login": RateLimit.per_minute(10, burst=10),
        "vaultpay.auth.v1.AuthService.RefreshToken": RateLimit.per_minute(30, burst=30),
        "vaultpay.wallet.v1.WalletService.RequestPinReset": RateLimit.per_minute(2, burst=5),
        "vaultpay.wallet.v1.WalletService.ResetPin": RateLimit.per_minute(2, burst=5),
        "vaultpay.wallet.v1.WalletService.SetPin": RateLimit.per_minute(5, burst=10),
        "vaultpay.wallet.v1.WalletService.ChangePin": RateLimit.per_minute(5, burst=10),
        "vaultpay.wallet.v1.WalletService.ConfirmIp": RateLimit.per_minute(2, burst=5),
    }
)


@dataclass(frozen=True, slots=True)
class RpcLimits:
    """What one RPC may carry through the gateway, where it differs from the defaults.

    Each value None keeps the gateway-wide default. Sizes are what the client sends or gets:

    - `grpc_request_bytes`: a native gRPC request body, message frames included (default
      `GatewaySettings.max_request_bytes`); for a client stream, the whole stream.
    - `json_request_bytes`: a JSON request body (default `max_request_bytes`). It also sizes
      the buffers the body passes through whole: the JSON body check's copy and the
      transcoder's. Bytes fields travel as base64 in JSON, a third larger (`base64_size`).
    - `json_response_bytes`: the transcoder's buffer for one JSON reply (default
      `GatewaySettings.max_json_response_bytes`).
    - `timeout_seconds`: how long a call may take from its first byte to its last, the
      client's upload and the reply included (default `unary_timeout_seconds` for unary
      RPCs, no limit for streams).
    """

    grpc_request_bytes: int | None = None
    json_request_bytes: int | None = None
    json_response_bytes: int | None = None
    timeout_seconds: float | None = None

    def __post_init__(self) -> None:
        for name in ("grpc_request_bytes", "json_request_bytes", "json_response_bytes"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= _MAX_BODY_CAP:
                raise SettingsError(f"{name} must be between 1 and {_MAX_BODY_CAP}")
        if self.timeout_seconds is not None and self.timeout_seconds <= 0:
            raise SettingsError("timeout_seconds must be positive")


def base64_size(size: int) -> int:
    """How long `size` bytes are in base64 (padded), as bytes fields are in JSON."""
    return 4 * math.ceil(size / 3)


# kyc's default file cap (`KYC_DOCUMENT_MAX_BYTES`, vaultpay_kyc.settings); a test keeps the
# two equal. A deployment that changes one passes the same number to the gateway
# (`--kyc-document-max-bytes`).
KYC_DOCUMENT_MAX_BYTES = 10 * MiB
# Room in one message beside a file of the cap (kyc's max_message_bytes has the same margin).
_KYC_FILE_MESSAGE_OVERHEAD = 64 * 1024
# A call that carries a whole file: room for a slower client than a unary call's 15 s.
KYC_FILE_TIMEOUT_SECONDS = 60.0


def kyc_file_limits(
    document_max_bytes: int = KYC_DOCUMENT_MAX_BYTES,
    *,
    timeout_seconds: float = KYC_FILE_TIMEOUT_SECONDS,
) -> Mapping[str, RpcLimits]:
    """The caps of the KYC RPCs that carry a document file, from kyc's file cap.

    A gRPC message holds the file and up to 64 KiB of other fields (kyc's own message limit);
    as JSON the same message is base64, rounded up to whole MiB: 14 MiB for a 10 MiB file.
    SubmitKyc takes the file inline (JSON or gRPC), UploadKycDocument streams it (gRPC only;
    the stream's frames count, so chunks of 4 KiB or more keep well inside the margin), and
    AdminGetKycSubmission returns it.
    """
    if not 0 < document_max_bytes <= 64 * MiB:
        raise SettingsError("the KYC document cap must be between 1 byte and 64 MiB")
    message = document_max_bytes + _KYC_FILE_MESSAGE_OVERHEAD
    json = math.ceil(base64_size(message) / MiB) * MiB
    kyc, admin = "vaultpay.kyc.v1.KycService", "vaultpay.kyc.v1.KycAdminService"
    return MappingProxyType(
        {
            f"{kyc}.SubmitKyc": RpcLimits(
                grpc_request_bytes=message,
                json_request_bytes=json,
                timeout_seconds=timeout_seconds,
            ),
            f"{kyc}.UploadKycDocument": RpcLimits(
                grpc_request_bytes=message, timeout_seconds=timeout_seconds
            ),
            f"{admin}.AdminGetKycSubmission": RpcLimits(
                json_response_bytes=json, timeout_seconds=timeout_seconds
            ),
        }
    )


DEFAULT_RPC_LIMITS: Mapping[str, RpcLimits] = kyc_file_limits()


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
    # Well under auth's AUTH_KEY_PUBLISH_LEAD_SECONDS (600): a standby key is in this cache
    # before a withdrawal promotes it, and a withdrawn key leaves it within a minute.
    jwks_cache_seconds: int = 60
    jwks_failed_refetch_seconds: float = 2.0
    clock_skew_seconds: int = 30

    def __post_init__(self) -> None:
        if not self.issuer or not self.audience:
            raise SettingsError("JWT issuer and audience are required")
        if self.jwks_cache_seconds < 1:
            raise SettingsError("JWKS cache duration must be positive")


def _default_upstreams() -> Mapping[str, HostPort]:
    return DEFAULT_UPSTREAMS


def _default_rpc_rate_limits() -> Mapping[str, RateLimit]:
    return DEFAULT_RPC_RATE_LIMITS


def _default_rpc_limits() -> Mapping[str, RpcLimits]:
    return DEFAULT_RPC_LIMITS


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a DNS name: it may resolve to anything


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Everything the gateway's Envoy bootstrap is rendered from."""

    descriptor_set: Path
    listen: HostPort = HostPort("127.0.0.1", 8080)
    # Envoy's admin interface can stop Envoy and dump its config: on a shared machine, put it
    # on a Unix socket in a private directory (`UnixSocket`), as the local runner does.
    admin: HostPort | UnixSocket = HostPort("127.0.0.1", 9901)
    # A listener that answers only `GET /ready` (asked of the admin interface), for probes
    # that must not reach the admin interface itself; None: no such listener.
    ready_listen: HostPort | None = None
    upstreams: Mapping[str, HostPort] = field(default_factory=_default_upstreams)
    cors_origins: tuple[str, ...] = ()
    # Every request body (JSON or native gRPC, a whole client stream) is capped here ...
    max_request_bytes: int = MiB
    # ... and the transcoder holds at most this much of one JSON reply (the services' 4 MiB
    # message limit; its own default, 32 KiB, turns a long list page into a 500) ...
    max_json_response_bytes: int = 4 * MiB
    # ... except for these RPCs (full names): the KYC RPCs that carry a file.
    rpc_limits: Mapping[str, RpcLimits] = field(default_factory=_default_rpc_limits)
    # The request line (path and query) and all request headers together, checked at the
    # edge (414 / 431) so that nothing too large for the services' gRPC metadata limit (24 KiB
    # soft, `vaultpay_common.grpc.server.MAX_METADATA_BYTES`; the reflection server's is the
    # same) is forwarded: gRPC counts 32 bytes more per header, and Envoy adds the original
    # path again and its own headers, so at most MAX_HEADER_BYTES (12 KiB) reach ~19 KiB.
    # Envoy's own parser stops at `max_request_headers_kb` (431 as well).
    max_path_bytes: int = 2048
    max_header_bytes: int = 8192
    max_request_headers_kb: int = 32
    # The global bucket: a backstop for the whole gateway, above the per-client buckets.
    rate_limit: RateLimit = RateLimit()
    # Every client address (see `trusted_proxy_hops`) has a bucket of its own ...
    client_rate_limit: RateLimit = RateLimit(max_tokens=200, tokens_per_fill=100)
    # ... and, for these RPCs (full names), a tighter one per RPC.
    rpc_rate_limits: Mapping[str, RateLimit] = field(default_factory=_default_rpc_rate_limits)
    # Client buckets Envoy keeps (least recently used ones are dropped, and start full again).
    max_tracked_clients: int = 10_000
    # Envoy sends every request to a service with that service's own secret in the
    # `x-vaultpay-gateway-identity` header: the value of the environment variable
    # `<prefix>_<UPSTREAM>` of the Envoy process (`gateway_secret_env`; so no secret lands in
    # the config file). A service that knows its secret trusts the client address the gateway
    # sends; a peer service, holding only its own, cannot vouch for an address at another.
    # None: no identity header (a client's is removed).
    identity_secret_env_prefix: str | None = GATEWAY_SECRET_ENV_PREFIX
    access_log_path: Path | None = None
    jwt: JwtSettings = JwtSettings()
    health_check: HealthCheck = HealthCheck()
    unary_timeout_seconds: float = 15.0
    # Proxies in front of the gateway (an ingress or load balancer) whose x-forwarded-for
    # entries are trusted for the client address; 0 when clients connect directly.
    trusted_proxy_hops: int = 0
    stream_idle_timeout_seconds: float = 3600.0
    # HTTP/2 PING to each service connection this often, so a dead one is noticed. The
    # services accept a ping every 10 s (`server_options`); pinging more often than a gRPC
    # server allows makes it close the connection with every stream on it.
    upstream_keepalive_seconds: float = 30.0
    jwks_socket_path: str | None = None
    # Serve Swagger UI and the OpenAPI document under /docs (public).
    serve_docs: bool = True
    # The reflection server (`python -m vaultpay_gateway.reflection`) that answers gRPC
    # server reflection for the public API through the gateway; None: reflection is not routed.
    reflection: HostPort | None = None
    # Envoy's overload manager: the heap Envoy may grow to (it shrinks its heap at 90 %,
    # resets the streams holding the most buffered memory from 85 to 95 %, shortens idle
    # timeouts, and stops accepting requests at 95 %), and the client connections it holds at
    # once. Keep the heap below the process's memory limit (a container's, say).
    max_heap_bytes: int = 1024 * MiB
    max_downstream_connections: int = 10_000

    def identity_secret_env(self, upstream: str) -> str | None:
        """The variable of Envoy's environment holding `upstream`'s gateway secret (None:
        identity off)."""
        if self.identity_secret_env_prefix is None:
            return None
        return gateway_secret_env(upstream, self.identity_secret_env_prefix)

    @property
    def request_timeout_seconds(self) -> float:
        """How long a request may take to arrive whole (its body included, a client stream's
        too): the longest RPC timeout and a margin. A body that trickles in (one byte now and
        then restarts every idle timer) cannot hold its buffers for longer."""
        longest = max(
            [self.unary_timeout_seconds]
            + [r.timeout_seconds for r in self.rpc_limits.values() if r.timeout_seconds]
        )
        return longest + 15.0

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
        if not 0 < self.max_request_bytes <= _MAX_BODY_CAP:
            raise SettingsError(f"max_request_bytes must be between 1 and {_MAX_BODY_CAP}")
        if not 0 < self.max_json_response_bytes <= _MAX_BODY_CAP:
            raise SettingsError(f"max_json_response_bytes must be between 1 and {_MAX_BODY_CAP}")
        if not 256 <= self.max_path_bytes <= self.max_header_bytes <= MAX_HEADER_BYTES:
            raise SettingsError(
                "max_path_bytes must be 256 or more and below max_header_bytes, which must be"
                f" at most {MAX_HEADER_BYTES} (what the services' metadata limit takes with"
                " Envoy's own headers)"
            )
        if not self.max_header_bytes <= self.max_request_headers_kb * 1024 <= 96 * 1024:
            raise SettingsError(
                "max_request_headers_kb must hold max_header_bytes and be at most 96"
            )
        if self.max_tracked_clients < 1:
            raise SettingsError("max_tracked_clients must be positive")
        if self.identity_secret_env_prefix is not None:
            prefix = self.identity_secret_env_prefix
            names = [gateway_secret_env(upstream, prefix) for upstream in self.upstreams]
            for name in [prefix, *names]:
                if not (name.isascii() and name.isidentifier()):
                    raise SettingsError(f"not an environment variable name: {name!r}")
            if len(set(names)) != len(names):
                raise SettingsError(f"two upstreams share a secret variable among {names}")
        if not 0 <= self.trusted_proxy_hops <= 5:
            raise SettingsError("trusted_proxy_hops must be between 0 and 5")
        if self.unary_timeout_seconds <= 0:
            raise SettingsError("unary_timeout_seconds must be positive")
        if self.upstream_keepalive_seconds <= 0:
            raise SettingsError("upstream_keepalive_seconds must be positive")
        if self.max_heap_bytes < 64 * MiB:
            raise SettingsError("max_heap_bytes must be at least 64 MiB")
        if self.max_downstream_connections < 1:
            raise SettingsError("max_downstream_connections must be positive")
        if isinstance(self.admin, HostPort) and not _is_loopback(self.admin.host):
            raise SettingsError(
                "the admin interface can stop Envoy and dump its config: bind it to a loopback "
                f"address or a Unix socket, not {self.admin.host}"
            )
        for origin in self.cors_origins:
            if origin == "*" or "://" not in origin or origin.endswith("/"):
                raise SettingsError(
                    f"CORS origin must be an exact scheme://host[:port], got {origin!r}"
                )
        object.__setattr__(self, "upstreams", MappingProxyType(dict(self.upstreams)))
        object.__setattr__(self, "rpc_rate_limits", MappingProxyType(dict(self.rpc_rate_limits)))
        object.__setattr__(self, "rpc_limits", MappingProxyType(dict(self.rpc_limits)))


def gateway_secret_env(upstream: str, prefix: str = GATEWAY_SECRET_ENV_PREFIX) -> str:
    """The variable Envoy reads `upstream`'s gateway secret from: `wallet` ->
    VAULTPAY_GATEWAY_SECRET_WALLET."""
    return f"{prefix}_{upstream.upper()}"


def identity_env_problems(settings: GatewaySettings, environ: Mapping[str, str]) -> list[str]:
    """What is wrong with the gateway secrets in `environ` (Envoy's environment) for
    `settings`, each said in a sentence; [] when nothing is (or identity is off).

    - The prefix itself set (VAULTPAY_GATEWAY_SECRET, the one secret every service shared
      before): refused, never used for all (a compromised service could then vouch for any
      client address at every other).
    - A service's variable missing (Envoy would send `-`), shorter than the services accept,
      or equal to another service's.
    """
    prefix = settings.identity_secret_env_prefix
    if prefix is None:
        return []
    names = {upstream: gateway_secret_env(upstream, prefix) for upstream in settings.upstreams}
    problems = []
    if prefix in environ:
        problems.append(
            f"{prefix} is set: one gateway secret for every service is no longer accepted."
            f" Give each service its own ({', '.join(names.values())}, each equal to that"
            f" service's <SERVICE>_GATEWAY_SECRET) and unset {prefix}"
        )
    seen: dict[str, str] = {}
    for upstream, name in names.items():
        value = environ.get(name)
        if value is None:
            problems.append(f"{name} is not set (the secret Envoy sends {upstream})")
        elif len(value) < _MIN_GATEWAY_SECRET_LENGTH:
            problems.append(
                f"{name} is shorter than {_MIN_GATEWAY_SECRET_LENGTH} characters"
                f" ({upstream} refuses such a secret)"
            )
        elif value in seen:
            problems.append(
                f"{name} is the same as {seen[value]}: each service needs a secret of its own"
            )
        else:
            seen[value] = name
    return problems
