"""Route tables, derived from the contract.

Every routed RPC gets one exact route on its gRPC path; the API docs (`docs`), when served,
get one public route per file. JSON requests reach the same routes:
the transcoder rewrites `GET /v1/auth/me` to `POST /vaultpay.auth.v1.AuthService/GetMe` and
clears the route cache before jwt_authn and the router look at it. Each route carries the
RPC's edge JWT decision, so there is no default: a path that is not an RPC of a non-internal
service falls through to a 404.

The RPCs that carry a KYC file (`GatewaySettings.rpc_limits`) have larger body caps and a
longer timeout on their routes; for JSON clients their REST bindings also get routes of their
own that size the buffers a body passes through before the transcoder (`body_limits`).

A server-streaming RPC's route (WatchNotifications, and so its JSON route `:watch` too) goes
to its service's streams cluster (`clusters.rpc_cluster`), whose breaker open streams cannot
share with the service's other calls.

Every RPC route sends the gateway's identity to its service (`IDENTITY_HEADER`, overwriting
whatever a client sent): that service's own secret, the value of the Envoy process's
environment variable `GatewaySettings.identity_secret_env(upstream)` (auth's routes
VAULTPAY_GATEWAY_SECRET_AUTH, wallet's, its streams included, VAULTPAY_GATEWAY_SECRET_WALLET).
The services trust `x-envoy-external-address` only from callers that present their own
secret (`vaultpay_common.grpc.request_context`), so no service can vouch for an address at
another with the secret it holds.
"""

from __future__ import annotations

from collections.abc import Sequence

from vaultpay_gateway._types import Json, duration, typed
from vaultpay_gateway.body_limits import (
    RpcCaps,
    body_limit_per_route,
    json_route_match,
    rpc_caps,
)
from vaultpay_gateway.clusters import rpc_cluster
from vaultpay_gateway.contract import ApiContract, Rpc
from vaultpay_gateway.docs import DocsSite, docs_routes
from vaultpay_gateway.errors import NOT_FOUND_TEXT
from vaultpay_gateway.filters import (
    HEADER_MUTATION_FILTER,
    JWT_BEFORE_BODY_FILTER,
    JWT_FILTER,
    JWT_REQUIREMENT,
    TRANSCODER_FILTER,
    transcoder_config,
)
from vaultpay_gateway.json_body import CAPTURE_FILTER, CHECK_FILTER
from vaultpay_gateway.settings import GatewaySettings

__all__ = [
    "IDENTITY_HEADER",
    "REFLECTION_CLUSTER",
    "REFLECTION_IDLE_TIMEOUT_SECONDS",
    "REFLECTION_MAX_STREAM_SECONDS",
    "UNROUTED_CLUSTER",
    "jwks_route_config",
    "public_route_config",
]

UNROUTED_CLUSTER = "vaultpay_unrouted"
REFLECTION_CLUSTER = "vaultpay_reflection"
# A reflection stream's life at the edge: idle, and in all (`_reflection_routes`).
REFLECTION_IDLE_TIMEOUT_SECONDS = 30
REFLECTION_MAX_STREAM_SECONDS = 60
_CORS_HEADERS = "authorization, content-type, x-request-id"
_CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
# Response headers browsers may read besides the CORS-safelisted ones.
_CORS_EXPOSED = "x-request-id, retry-after"
# Proves to the services that a request comes from the gateway (see the module docstring).
IDENTITY_HEADER = "x-vaultpay-gateway-identity"
# Only requests that are safe to resend: the service never saw them.
_RETRY = {"retry_on": "connect-failure,refused-stream", "num_retries": 2}
_GRPC_HEADERS = (
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "grpc-accept-encoding",
    "grpc-encoding",
)


def _is_public(rpc: Rpc) -> bool:
    return rpc.rule is not None and rpc.rule.public


def _jwt_per_route(rpc: Rpc) -> Json:
    if _is_public(rpc):
        return typed("envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig", disabled=True)
    return typed(
        "envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig",
        requirement_name=JWT_REQUIREMENT,
    )


def _identity(settings: GatewaySettings, upstream: str) -> Json:
    """The identity header for a request to `upstream`: its own secret, from Envoy's
    environment; a client's copy never passes.

    An unset variable reaches the service as `-`, and an empty one as an empty header
    (`keep_empty_value`; Envoy drops an empty header otherwise, and the service would take
    the call for a direct one without a word): either is a presented identity that matches
    nothing, which the service says at WARNING.
    """
    variable = settings.identity_secret_env(upstream)
    if variable is None:
        return {"request_headers_to_remove": [IDENTITY_HEADER]}
    return {
        "request_headers_to_add": [
            {
                "header": {"key": IDENTITY_HEADER, "value": f"%ENVIRONMENT({variable})%"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                "keep_empty_value": True,
            }
        ]
    }


def _rpc_route(
    rpc: Rpc, upstream: str, cluster: str, settings: GatewaySettings, caps: RpcCaps | None
) -> Json:
    action: Json = {"cluster": cluster, "retry_policy": _RETRY}
    seconds = caps.timeout_seconds if caps is not None else None
    if seconds is None and not rpc.is_streaming:
        seconds = settings.unary_timeout_seconds
    if seconds is None:
        # Streams live as long as the client wants (GATEWAY.md item 8). A client deadline
        # (grpc-timeout) is left to the two ends, which both enforce it and answer
        # DEADLINE_EXCEEDED: Envoy enforcing it too (`grpc_timeout_header_max`) reset a stream
        # whose reply had started when the deadline came, which clients read as INTERNAL.
        action["timeout"] = "0s"
        action["idle_timeout"] = duration(settings.stream_idle_timeout_seconds)
    else:
        timeout = duration(seconds)
        action["timeout"] = timeout
        # With max_stream_duration set, Envoy ignores `timeout`: the cap must be given here
        # too, or calls without a grpc-timeout (every JSON call) would run unbounded. It
        # counts from the request's first byte, so a slow upload counts too.
        action["max_stream_duration"] = {
            "max_stream_duration": timeout,
            "grpc_timeout_header_max": timeout,
        }
    per_filter: Json = {JWT_FILTER: _jwt_per_route(rpc)}
    if caps is not None:
        # Native gRPC only: JSON requests pass the body cap of the route they arrive on.
        per_filter.update(body_limit_per_route(caps.grpc_request_bytes, settings.max_request_bytes))
    return {
        "name": rpc.full_name,
        "match": {"path": rpc.grpc_path, "grpc": {}},
        "route": action,
        **_identity(settings, upstream),
        "typed_per_filter_config": per_filter,
    }


def _reflection_routes(settings: GatewaySettings) -> list[Json]:
    """Server reflection (v1alpha and v1) to the reflection server, public like the docs.

    Native gRPC only (`grpc: {}`); the transcoder, the JSON body filters and jwt_authn are off
    for these routes. Anyone may open a reflection stream, so a stream lives briefly:
    `REFLECTION_IDLE_TIMEOUT_SECONDS` without a message, `REFLECTION_MAX_STREAM_SECONDS` in
    all (grpcurl's streams last milliseconds). The reflection cluster has its own small
    circuit breaker (`clusters.MAX_REFLECTION_REQUESTS`) and the server a cap on the messages
    of one stream (`reflection.MAX_MESSAGES_PER_STREAM`).
    """
    # Imported here: the package imports this module, and `python -m vaultpay_gateway.reflection`
    # must find the reflection module not imported yet (else runpy warns on every start).
    from vaultpay_gateway.reflection import reflection_paths

    lifetime = duration(REFLECTION_MAX_STREAM_SECONDS)
    disabled = typed("envoy.config.route.v3.FilterConfig", disabled=True)
    off = dict.fromkeys(
        (CAPTURE_FILTER, "envoy.filters.http.grpc_json_transcoder", JWT_FILTER, CHECK_FILTER),
        disabled,
    )
    return [
        {
            "name": f"reflection {path}",
            "match": {"path": path, "grpc": {}},
            "route": {
                "cluster": REFLECTION_CLUSTER,
                # Ignored while max_stream_duration is set (as in `_rpc_route`); the same cap.
                "timeout": lifetime,
                "idle_timeout": duration(
                    min(REFLECTION_IDLE_TIMEOUT_SECONDS, settings.stream_idle_timeout_seconds)
                ),
                # From the request's first byte. No grpc_timeout_header_max: a client's
                # grpc-timeout stays with the two ends, as on the other streams.
                "max_stream_duration": {"max_stream_duration": lifetime},
                "retry_policy": _RETRY,
            },
            "request_headers_to_remove": [IDENTITY_HEADER],
            "typed_per_filter_config": off,
        }
        for path in reflection_paths()
    ]


def _connect_refused() -> Json:
    """CONNECT: a tunnel, which the gateway does not carry. Matched by a route, it is refused
    at once by Envoy as an upgrade no `upgrade_configs` allows (403, `upgrade_failed`, before
    any filter; `errors` answers it as 400 UPGRADE_NOT_SUPPORTED); the direct response is only
    the route's required action. Without this route a CONNECT over HTTP/1.1 matched none and
    waited in the JSON body capture, for a body that never ends, until the request timeout."""
    return {
        "name": "connect_refused",
        "match": {"connect_matcher": {}},
        "direct_response": {"status": 403},
    }


def _grpc_not_found() -> Json:
    return {
        "name": "grpc_not_found",
        "match": {"prefix": "/", "grpc": {}},
        "direct_response": {"status": 404, "body": {"inline_string": NOT_FOUND_TEXT}},
    }


def _json_reply_headers() -> Json:
    """JSON replies carry no `grpc-*` headers (GATEWAY.md item 4)."""
    return {
        HEADER_MUTATION_FILTER: typed(
            "envoy.extensions.filters.http.header_mutation.v3.HeaderMutationPerRoute",
            mutations={"response_mutations": [{"remove": h} for h in _GRPC_HEADERS]},
        )
    }


def _unrouted() -> Json:
    return {"cluster": UNROUTED_CLUSTER, "cluster_not_found_response_code": "NOT_FOUND"}


def _json_not_found(max_request_bytes: int) -> Json:
    """Where JSON requests sit until the transcoder has rewritten their path.

    The filters before the transcoder (header_mutation, cors, the JSON body capture) see this
    route. It must be a route entry, not a direct response, for the cors filter to act; it
    names a cluster that does not exist, so anything that were to reach the router with it
    gets a 404. Its buffer limit lets the body capture hold a whole body up to the body cap
    (the listener's per-connection limit, 32 KiB, would answer 413 above that); gRPC routes
    keep the small default.
    """
    return {
        "name": "json_not_found",
        "match": {"prefix": "/"},
        "request_body_buffer_limit": max_request_bytes,
        "route": _unrouted(),
        "typed_per_filter_config": _json_reply_headers(),
    }


def _json_limit_routes(
    contract: ApiContract, settings: GatewaySettings, caps: Sequence[RpcCaps]
) -> list[Json]:
    """`_json_not_found` for the REST bindings of RPCs with their own JSON caps: the same
    unrouted action, with their body cap, buffer limit and transcoder buffers (`body_limits`).
    """
    services = [s.full_name for s in contract.public_services]
    descriptor = str(settings.descriptor_set.resolve())
    routes: list[Json] = []
    for cap in caps:
        if not cap.json_route:
            continue
        transcoder = transcoder_config(
            descriptor,
            services,
            max_response_bytes=cap.json_response_bytes,
            max_request_bytes=cap.json_request_bytes,
        )
        routes += [
            {
                "name": f"json {binding.method} {binding.template}",
                "match": json_route_match(binding, needs_token=not _is_public(cap.rpc)),
                "request_body_buffer_limit": cap.json_request_bytes,
                "route": _unrouted(),
                "typed_per_filter_config": {
                    **_json_reply_headers(),
                    TRANSCODER_FILTER: transcoder,
                    **body_limit_per_route(cap.json_request_bytes, settings.max_request_bytes),
                    **(
                        {}
                        if _is_public(cap.rpc)
                        else {JWT_BEFORE_BODY_FILTER: _jwt_per_route(cap.rpc)}
                    ),
                },
            }
            for binding in cap.rpc.http
        ]
    return routes


def _cors_policy(origins: Sequence[str]) -> Json:
    return typed(
        "envoy.extensions.filters.http.cors.v3.CorsPolicy",
        allow_origin_string_match=[{"exact": origin} for origin in origins],
        allow_methods=_CORS_METHODS,
        allow_headers=_CORS_HEADERS,
        expose_headers=_CORS_EXPOSED,
        max_age="600",
        allow_credentials=False,
    )


def public_route_config(
    contract: ApiContract,
    settings: GatewaySettings,
    docs: DocsSite | None = None,
    caps: Sequence[RpcCaps] | None = None,
) -> Json:
    """`caps`: `body_limits.rpc_caps(contract, settings)`, computed here when not given."""
    if caps is None:
        caps = rpc_caps(contract, settings)
    by_rpc = {cap.rpc.full_name: cap for cap in caps}
    routes = [
        _rpc_route(
            rpc,
            contract.service_of(rpc).upstream,
            rpc_cluster(contract, rpc),
            settings,
            by_rpc.get(rpc.full_name),
        )
        for rpc in contract.routed_rpcs()
    ]
    virtual_host: Json = {
        "name": "vaultpay_api",
        "domains": ["*"],
        "routes": [
            _connect_refused(),
            *(docs_routes(docs) if docs is not None else ()),
            *(_reflection_routes(settings) if settings.reflection is not None else ()),
            *routes,
            _grpc_not_found(),
            *_json_limit_routes(contract, settings, caps),
            _json_not_found(settings.max_request_bytes),
        ],
    }
    if settings.cors_origins:
        virtual_host["typed_per_filter_config"] = {
            "envoy.filters.http.cors": _cors_policy(settings.cors_origins)
        }
    # The one route without a real cluster is json_not_found's UNROUTED_CLUSTER.
    config: Json = {
        "name": "vaultpay_api",
        "virtual_hosts": [virtual_host],
        "validate_clusters": False,
    }
    if docs is not None:
        # Direct response bodies are limited to 4 KiB unless raised; Swagger UI's script is
        # about 1 MiB.
        config["max_direct_response_body_size_bytes"] = docs.max_body_bytes
    return config


def jwks_route_config(jwks_rpc: Rpc, cluster: str) -> Json:
    """The internal JWKS listener routes the one RPC and nothing else."""
    return {
        "name": "jwks",
        "virtual_hosts": [
            {
                "name": "jwks",
                "domains": ["*"],
                "routes": [
                    {
                        "match": {"path": jwks_rpc.grpc_path, "grpc": {}},
                        "route": {"cluster": cluster, "timeout": "5s"},
                    },
                    {
                        "match": {"prefix": "/"},
                        "direct_response": {
                            "status": 404,
                            "body": {"inline_string": NOT_FOUND_TEXT},
                        },
                    },
                ],
            }
        ],
    }
