"""Upstream clusters: one HTTP/2 cluster per service, gRPC health checked, and a second one
(`<service>_streams`, same endpoint) for the service's server-streaming RPCs."""

from __future__ import annotations

from vaultpay_gateway._types import Json, duration, typed
from vaultpay_gateway.contract import ApiContract, Rpc
from vaultpay_gateway.settings import HealthCheck, HostPort

__all__ = [
    "ADMIN_CLUSTER",
    "JWKS_CLUSTER",
    "JWKS_LISTENER",
    "MAX_REFLECTION_REQUESTS",
    "MAX_STREAM_REQUESTS",
    "MAX_UPSTREAM_REQUESTS",
    "STREAMS_SUFFIX",
    "admin_cluster",
    "jwks_cluster",
    "rpc_cluster",
    "stream_upstreams",
    "streams_cluster",
    "upstream_cluster",
]

JWKS_LISTENER = "jwks_loopback"
JWKS_CLUSTER = "jwks_loopback"
ADMIN_CLUSTER = "envoy_admin"


def _http2_only(keepalive_seconds: float) -> Json:
    """HTTP/2 to the service, pinged every `keepalive_seconds` (a dead connection is closed
    after 5 s without an answer). The services must accept pings that often while a stream is
    idle (`grpc.http2.min_ping_interval_without_data_ms`, 10 s in `server_options`), or they
    count them as strikes and close the connection, streams and all."""
    return {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            explicit_http_config={
                "http2_protocol_options": {
                    "connection_keepalive": {
                        "interval": duration(keepalive_seconds),
                        "timeout": "5s",
                    },
                }
            },
        )
    }


def _endpoint(address: Json) -> Json:
    return {"endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]}


# Requests in flight to one service at once (Envoy's default is 1,024). The per-client and
# per-RPC rate limits, and each service's own, bound the unary load. Server streams
# (WatchNotifications: up to 5 a user, each open for as long as its client likes) do not count
# here: they go to the service's streams cluster (`streams_cluster`), whose breaker is
# `MAX_STREAM_REQUESTS`, so open streams can never make the service's other calls answer 503.
MAX_UPSTREAM_REQUESTS = 20_000
# Server streams in flight to one service at once, on its streams cluster. Past this, a new
# stream gets 503 (UNAVAILABLE) at once; the unary calls are unaffected.
MAX_STREAM_REQUESTS = 20_000
STREAMS_SUFFIX = "_streams"
# The reflection server's breaker: any client may open reflection streams, and a small
# Python server behind the services' 20,000 would be theirs to tie up. grpcurl needs one
# stream per command; past this, Envoy answers 503 (UNAVAILABLE) at once. Below the server's
# own cap (`reflection.MAX_CONCURRENT_RPCS`), which leaves room for health checks.
MAX_REFLECTION_REQUESTS = 100


def streams_cluster(upstream: str) -> str:
    """The name of the cluster for `upstream`'s server streams: `wallet` -> `wallet_streams`."""
    return f"{upstream}{STREAMS_SUFFIX}"


def rpc_cluster(contract: ApiContract, rpc: Rpc) -> str:
    """The cluster an RPC's route goes to: its service's streams cluster for a server stream
    (however the request arrives: native gRPC or its transcoded JSON route), else the service's
    cluster. Client streams (the KYC upload) are bounded by their timeout and stay with the
    service's cluster."""
    upstream = contract.service_of(rpc).upstream
    return streams_cluster(upstream) if rpc.server_streaming else upstream


def stream_upstreams(contract: ApiContract) -> tuple[str, ...]:
    """The upstreams with a routed server-streaming RPC: each gets a streams cluster."""
    return tuple(
        sorted(
            {contract.service_of(r).upstream for r in contract.routed_rpcs() if r.server_streaming}
        )
    )


def upstream_cluster(
    name: str,
    address: HostPort,
    health: HealthCheck,
    keepalive_seconds: float = 30.0,
    *,
    max_requests: int = MAX_UPSTREAM_REQUESTS,
) -> Json:
    """A cluster for one service, at most `max_requests` requests (streams) in flight.

    Panic mode is off (`healthy_panic_threshold: 0`): when the only host fails its health
    check, requests get an immediate 503 instead of a connect attempt to a dead process.
    Only failures that prove the request never reached the service are retried.
    """
    return {
        "name": name,
        "type": "STATIC" if address.is_ip else "STRICT_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": _http2_only(keepalive_seconds),
        "load_assignment": {
            "cluster_name": name,
            **_endpoint({"socket_address": {"address": address.host, "port_value": address.port}}),
        },
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
        "circuit_breakers": {"thresholds": [{"max_requests": max_requests}]},
        "health_checks": [
            {
                "timeout": duration(health.timeout_seconds),
                "interval": duration(health.interval_seconds),
                "unhealthy_interval": duration(health.unhealthy_interval_seconds),
                "no_traffic_interval": duration(health.no_traffic_interval_seconds),
                "no_traffic_healthy_interval": duration(health.no_traffic_interval_seconds),
                "unhealthy_threshold": health.unhealthy_threshold,
                "healthy_threshold": health.healthy_threshold,
                "interval_jitter_percent": 10,
                "grpc_health_check": {"service_name": ""},
            }
        ],
    }


def jwks_cluster(socket: str) -> Json:
    """The cluster jwt_authn fetches the JWK Set through: Envoy's own JWKS listener.

    A Unix socket rather than an Envoy internal listener: jwt_authn's async fetch runs on the
    main thread, and internal listeners only accept connections from worker threads.
    """
    return {
        "name": JWKS_CLUSTER,
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": JWKS_CLUSTER,
            **_endpoint({"pipe": {"path": socket}}),
        },
    }


def admin_cluster(address: Json) -> Json:
    """Envoy's own admin interface, for the readiness listener's `GET /ready` only."""
    return {
        "name": ADMIN_CLUSTER,
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": ADMIN_CLUSTER, **_endpoint(address)},
    }
