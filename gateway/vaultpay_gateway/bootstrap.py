"""The whole Envoy bootstrap, as plain data ready for `json.dumps`.

    contract = load_contract(settings.descriptor_set)
    config = render_bootstrap(settings, contract)
    write_bootstrap(config, Path("var/gateway/envoy.yaml"))   # JSON is valid YAML

Two listeners: the public one (JSON and native gRPC on one cleartext port) and a Unix-socket
listener that only serves the JWK Set to jwt_authn (see `jwks_uri`). jwt_authn's background
fetch thus gets auth's current keys through the same transcoder clients use, without a TCP
port of its own and without passing the public listener's rate limit. With
`settings.ready_listen`, a third one answers `GET /ready` (from the admin interface) and
nothing else, for probes that must not reach the admin interface itself.

The admin interface listens where `settings.admin` says: a TCP address, or a Unix socket
(`UnixSocket`, mode 0600) in a directory only its owner may enter (`build_config` makes it
0700), which no other local user can reach.
"""

from __future__ import annotations

import json
from pathlib import Path

from vaultpay_gateway._types import Json, duration, typed
from vaultpay_gateway.body_limits import rpc_caps
from vaultpay_gateway.body_schema import body_schemas
from vaultpay_gateway.clusters import (
    ADMIN_CLUSTER,
    JWKS_LISTENER,
    MAX_REFLECTION_REQUESTS,
    MAX_STREAM_REQUESTS,
    admin_cluster,
    jwks_cluster,
    stream_upstreams,
    streams_cluster,
    upstream_cluster,
)
from vaultpay_gateway.contract import ApiContract, ContractError, Rpc
from vaultpay_gateway.docs import DOCS_PATH, DocsSite
from vaultpay_gateway.errors import local_reply_config
from vaultpay_gateway.filters import grpc_json_transcoder, public_http_filters, router
from vaultpay_gateway.ratelimits import client_retry_after_seconds, rpc_rate_limits
from vaultpay_gateway.replies import REPLIES_METADATA
from vaultpay_gateway.routes import REFLECTION_CLUSTER, jwks_route_config, public_route_config
from vaultpay_gateway.settings import GatewaySettings, HostPort, SettingsError, UnixSocket

__all__ = [
    "ACCESS_LOG_FORMAT",
    "NO_INTERNAL_ADDRESSES",
    "address_of",
    "jwks_uri",
    "overload_manager",
    "render_bootstrap",
    "write_bootstrap",
]

# Never the Authorization header, never a query string (it may hold a token someone tried
# to pass as ?access_token=).
ACCESS_LOG_FORMAT: Json = {
    "start_time": "%START_TIME%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "client": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "protocol": "%PROTOCOL%",
    "method": "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%",
    "path": "%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "rpc": "%REQ_WITHOUT_QUERY(:PATH)%",
    "status": "%RESPONSE_CODE%",
    # The code a JSON error reply's body carries (the `replies` filter records it), else
    # Envoy's (grpc-status of the reply, or a guess from the HTTP status).
    "grpc_status": "%TYPED_CEL("
    f"'{REPLIES_METADATA}' in metadata.filter_metadata"
    f" && 'grpc_status' in metadata.filter_metadata['{REPLIES_METADATA}']"
    f" ? int(metadata.filter_metadata['{REPLIES_METADATA}']['grpc_status'])"
    " : response.grpc_status)%",
    "response_flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "duration_ms": "%DURATION%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_host": "%UPSTREAM_HOST%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "user_agent": "%REQ(USER-AGENT)%",
}
_JWKS_HOST = "jwks.internal"
# The public listener's internal addresses: none a client can have. Envoy trusts a request
# from an internal address as one from its own network: it keeps the x-envoy-* headers the
# client sent (an x-envoy-external-address of its choosing, which the services would record as
# its address) and sets none. Envoy 1.40's own default is the same (nothing internal); it is
# pinned here so that an older Envoy (whose default took RFC 1918 addresses and 127.0.0.1 for
# internal) or a CIDR range someone adds cannot change it unseen. Not `{}` nor an empty
# `cidr_ranges`: an internal_address_config without CIDR ranges falls back to that old default,
# even on 1.40 (a client on 127.0.0.1 had its forged address passed). The unspecified
# addresses, 0.0.0.0/32 and ::/128, are never a connection's source: listing them keeps the
# list non-empty and matches no client. Unix-socket clients are not internal either.
NO_INTERNAL_ADDRESSES: Json = {
    "unix_sockets": False,
    "cidr_ranges": [
        {"address_prefix": "0.0.0.0", "prefix_len": 32},  # noqa: S104 - a match, not a bind
        {"address_prefix": "::", "prefix_len": 128},
    ],
}


def _socket(address: HostPort) -> Json:
    return {"socket_address": {"address": address.host, "port_value": address.port}}


def address_of(address: HostPort | UnixSocket) -> Json:
    """An Envoy `Address`: a TCP socket, or a Unix socket (`pipe`) with its permission bits."""
    if isinstance(address, UnixSocket):
        return {"pipe": {"path": str(address.path), "mode": address.mode}}
    return _socket(address)


def _access_log(path: Path | None) -> list[Json]:
    log_format = {
        "json_format": ACCESS_LOG_FORMAT,
        "formatters": [
            {
                "name": "envoy.formatter.req_without_query",
                "typed_config": typed(
                    "envoy.extensions.formatter.req_without_query.v3.ReqWithoutQuery"
                ),
            },
            {
                "name": "envoy.formatter.cel",
                "typed_config": typed("envoy.extensions.formatter.cel.v3.Cel"),
            },
        ],
    }
    if path is None:
        return [
            {
                "name": "envoy.access_loggers.stdout",
                "typed_config": typed(
                    "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                    log_format=log_format,
                ),
            }
        ]
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": typed(
                "envoy.extensions.access_loggers.file.v3.FileAccessLog",
                path=str(path.resolve()),
                log_format=log_format,
            ),
        }
    ]


def _hcm(stat_prefix: str, **fields: object) -> Json:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": typed(
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            stat_prefix=stat_prefix,
            **fields,
        ),
    }


def _jwks_rpc(contract: ApiContract, settings: GatewaySettings) -> Rpc:
    rpc = contract.find_rpc(settings.jwt.jwks_rpc)
    if not any(b.method == "GET" for b in rpc.http):
        raise ContractError(f"{rpc.full_name} has no HTTP GET binding to fetch the JWKS from")
    return rpc


def jwks_uri(contract: ApiContract, settings: GatewaySettings) -> str:
    """Where jwt_authn fetches keys: the JWKS RPC's GET path on the JWKS listener."""
    rpc = _jwks_rpc(contract, settings)
    path = next(b.template for b in rpc.http if b.method == "GET")
    return f"http://{_JWKS_HOST}{path}"


def _public_listener(
    contract: ApiContract, settings: GatewaySettings, docs: DocsSite | None
) -> Json:
    caps = rpc_caps(contract, settings)
    hcm = _hcm(
        "gateway",
        codec_type="AUTO",
        # The client address comes from the TCP connection (or, behind N trusted proxies, from
        # the N-th x-forwarded-for entry from the right), and is handed to the services as
        # x-envoy-external-address (GATEWAY.md item 9).
        use_remote_address=True,
        xff_num_trusted_hops=settings.trusted_proxy_hops,
        # No client is internal (`NO_INTERNAL_ADDRESSES`): an internal one keeps the
        # x-envoy-external-address it sent, which would reach the services as its address.
        internal_address_config=NO_INTERNAL_ADDRESSES,
        # A fresh id for every request from outside; it is returned to the client.
        generate_request_id=True,
        preserve_external_request_id=False,
        always_set_request_id_in_response=True,
        normalize_path=True,
        merge_slashes=True,
        path_with_escaped_slashes_action="REJECT_REQUEST",
        server_name="vaultpay-gateway",
        request_headers_timeout="10s",
        # The whole request (body, client stream) within the longest RPC timeout and a margin
        # (`GatewaySettings.request_timeout_seconds`); disarmed once the reply starts, so a
        # server stream (WatchNotifications) is not cut by it.
        request_timeout=duration(settings.request_timeout_seconds),
        stream_idle_timeout="300s",
        # Envoy's parser refuses (431) anything beyond this; `request_guard` applies the
        # tighter caps the services need.
        max_request_headers_kb=settings.max_request_headers_kb,
        common_http_protocol_options={
            "idle_timeout": "300s",
            "headers_with_underscores_action": "REJECT_REQUEST",
        },
        http2_protocol_options={
            "max_concurrent_streams": 100,
            "initial_stream_window_size": 65536,
            "initial_connection_window_size": 1048576,
            # PINGs to every HTTP/2 client: a connection gone silent (a phone that changed
            # networks, a NAT that forgot it) closes within about 50 s, ending its streams.
            # Without them a dead client's notification streams stayed open until their
            # tokens expired, up to 15 minutes, and five such filled the user's cap: the
            # app's live re-open was refused TOO_MANY_STREAMS (review of 2026-12-05). Only
            # for clients that reach Envoy directly: a proxy in front (ingress-nginx)
            # answers the PINGs itself (docs/decisions.md).
            "connection_keepalive": {"interval": "30s", "timeout": "20s"},
        },
        route_config=public_route_config(contract, settings, docs, caps),
        http_filters=public_http_filters(
            settings,
            [s.full_name for s in contract.public_services],
            jwks_uri(contract, settings),
            body_schemas(contract),
            rpc_rate_limits(contract, settings),
            caps,
            contract,
        ),
        local_reply_config=local_reply_config(
            DOCS_PATH if docs is not None else None,
            retry_after_seconds=client_retry_after_seconds(settings),
        ),
        access_log=_access_log(settings.access_log_path),
    )
    return {
        "name": "public",
        "address": _socket(settings.listen),
        "per_connection_buffer_limit_bytes": 32768,
        "filter_chains": [{"filters": [hcm]}],
    }


def _jwks_listener(contract: ApiContract, settings: GatewaySettings) -> Json:
    rpc = _jwks_rpc(contract, settings)
    hcm = _hcm(
        "jwks",
        route_config=jwks_route_config(rpc, contract.service_of(rpc).upstream),
        http_filters=[
            grpc_json_transcoder(
                str(settings.descriptor_set.resolve()),
                [rpc.service],
                max_response_bytes=settings.max_json_response_bytes,
            ),
            router(),
        ],
    )
    return {
        "name": JWKS_LISTENER,
        "address": {"pipe": {"path": settings.jwks_socket}},
        "filter_chains": [{"filters": [hcm]}],
    }


def _ready_listener(address: HostPort) -> Json:
    """`GET /ready` asked of the admin interface; 404 for everything else."""
    route_config = {
        "name": "ready",
        "virtual_hosts": [
            {
                "name": "ready",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {
                            "path": "/ready",
                            "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
                        },
                        "route": {"cluster": ADMIN_CLUSTER, "timeout": "2s"},
                    },
                    {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
                ],
            }
        ],
    }
    hcm = _hcm("ready", route_config=route_config, http_filters=[router()])
    return {"name": "ready", "address": _socket(address), "filter_chains": [{"filters": [hcm]}]}


def render_bootstrap(
    settings: GatewaySettings, contract: ApiContract, docs: DocsSite | None = None
) -> Json:
    """The Envoy v3 bootstrap for `settings`, routing what `contract` declares, and serving
    the API docs from `docs` (`docs.write_docs_site`) when given."""
    missing = [name for name in contract.upstreams if name not in settings.upstreams]
    if missing:
        raise SettingsError(f"no upstream address for: {', '.join(missing)}")
    clusters = [
        upstream_cluster(
            name,
            settings.upstreams[name],
            settings.health_check,
            settings.upstream_keepalive_seconds,
        )
        for name in contract.upstreams
    ]
    # Server streams get a cluster of their own per service (same endpoint, health check and
    # HTTP/2 options) with its own breaker, so that open streams never fill the breaker the
    # service's other calls share (`clusters.MAX_UPSTREAM_REQUESTS`).
    clusters += [
        upstream_cluster(
            streams_cluster(name),
            settings.upstreams[name],
            settings.health_check,
            settings.upstream_keepalive_seconds,
            max_requests=MAX_STREAM_REQUESTS,
        )
        for name in stream_upstreams(contract)
    ]
    names = [c["name"] for c in clusters]
    if len(set(names)) != len(names):
        raise ContractError(f"two clusters share a name among: {', '.join(sorted(names))}")
    if settings.reflection is not None:
        clusters.append(
            upstream_cluster(
                REFLECTION_CLUSTER,
                settings.reflection,
                settings.health_check,
                settings.upstream_keepalive_seconds,
                max_requests=MAX_REFLECTION_REQUESTS,
            )
        )
    listeners = [_public_listener(contract, settings, docs), _jwks_listener(contract, settings)]
    clusters.append(jwks_cluster(settings.jwks_socket))
    if settings.ready_listen is not None:
        listeners.append(_ready_listener(settings.ready_listen))
        clusters.append(admin_cluster(address_of(settings.admin)))
    return {
        "node": {"id": "vaultpay-gateway", "cluster": "vaultpay-gateway"},
        "admin": {"address": address_of(settings.admin)},
        "overload_manager": overload_manager(settings),
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


_HEAP = "envoy.resource_monitors.fixed_heap"
_CONNECTIONS = "envoy.resource_monitors.global_downstream_max_connections"


def overload_manager(settings: GatewaySettings) -> Json:
    """Envoy's edge guidance: a heap bound with graduated actions, so a flood of slow or
    large requests meets refusals and resets, not the kernel's OOM killer; and a bound on the
    client connections held at once. Streams holding 1 MiB or more of buffers are tracked so
    that the biggest can be reset first."""

    def above(value: float) -> list[Json]:
        return [{"name": _HEAP, "threshold": {"value": value}}]

    return {
        "refresh_interval": "0.25s",
        "resource_monitors": [
            {
                "name": _HEAP,
                "typed_config": typed(
                    "envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                    max_heap_size_bytes=settings.max_heap_bytes,
                ),
            },
            {
                "name": _CONNECTIONS,
                "typed_config": typed(
                    "envoy.extensions.resource_monitors.downstream_connections.v3."
                    "DownstreamConnectionsConfig",
                    max_active_downstream_connections=settings.max_downstream_connections,
                ),
            },
        ],
        "actions": [
            {"name": "envoy.overload_actions.shrink_heap", "triggers": above(0.90)},
            {"name": "envoy.overload_actions.stop_accepting_requests", "triggers": above(0.95)},
            {
                "name": "envoy.overload_actions.reset_high_memory_stream",
                "triggers": [
                    {
                        "name": _HEAP,
                        "scaled": {"scaling_threshold": 0.85, "saturation_threshold": 0.95},
                    }
                ],
            },
            {
                "name": "envoy.overload_actions.reduce_timeouts",
                "triggers": [
                    {
                        "name": _HEAP,
                        "scaled": {"scaling_threshold": 0.80, "saturation_threshold": 0.95},
                    }
                ],
                "typed_config": typed(
                    "envoy.config.overload.v3.ScaleTimersOverloadActionConfig",
                    timer_scale_factors=[
                        {"timer": "HTTP_DOWNSTREAM_CONNECTION_IDLE", "min_scale": {"value": 10}},
                        {"timer": "HTTP_DOWNSTREAM_STREAM_IDLE", "min_scale": {"value": 10}},
                    ],
                ),
            },
        ],
        "buffer_factory_config": {"minimum_account_to_track_power_of_two": 20},
    }


def write_bootstrap(config: Json, out: Path) -> Path:
    """Writes `config` as JSON (Envoy reads it from a .json or .yaml file alike)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out
