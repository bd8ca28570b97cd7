"""The HTTP filter chain of the public listener, in decode order.

    header_mutation -> replies (lua) -> cors -> local_ratelimit (per client + global)
    -> request_guard (lua) -> jwt_authn.before_body (KYC file routes only)
    -> body_size_limit -> json_body.capture (lua) -> grpc_json_transcoder -> rpc_ratelimit
    -> jwt_authn -> json_body.check (lua) -> router

- header_mutation comes first so that, on the way back, it sees every reply, Envoy's own
  included: it adds `Cache-Control: no-store` to any reply that has no Cache-Control (tokens
  and personal data must not be kept by browsers or proxies; the docs set their own), and
  removes the local reply mapper's internal marks from every reply. It also drops `grpc-*`
  headers from JSON replies (GATEWAY.md item 4); that per-route config is
  read while the path is still the REST path, so it only applies to JSON requests.
- Cheap rejections next (after cors, so that their replies carry its headers): the client's
  token bucket and the global one (`ratelimits`), the request line and header caps
  (`request_guard`, below), then the body cap (GATEWAY.md item 5: the transcoder's own limit
  only sizes its buffer): one instance per cap in use, the RPCs that carry a KYC file
  switching to theirs per route (`body_limits`).
- replies (`replies`) only acts on the way back, on replies of the filters after it and of
  the services: allowed CORS preflights become 204, the transcoder's JSON type errors get a
  BadRequest naming the field, upstream errors without an ErrorInfo get a generic message,
  429s get `Retry-After`.
- cors answers preflights before the transcoder would reject OPTIONS as an unknown method.
- request_guard (`request_guard`) caps the request line and headers (414 / 431) and accepts
  the bearer scheme in any case, before anything reads them: both jwt_authn filters (the KYC
  file routes' early one among them) match the prefix `Bearer ` case-sensitively.
- rpc_ratelimit (`ratelimits`) follows the transcoder: `:path` is then the exact gRPC path,
  for JSON and gRPC clients alike, and expensive public RPCs spend their own per-client
  budget.
- jwt_authn runs after the transcoder: by then every request, JSON or gRPC, carries the gRPC
  path of exactly one RPC, and the route's per-route config (derived from the RPC's access
  rule) decides whether a token is needed. No REST template has to be turned into a regex,
  so templates cannot overlap into a public hole.
- The JSON body check is split around the transcoder (`json_body`): the capture refuses a
  body not sent as `application/json` (415: the transcoder would read it as JSON anyway) and
  copies the (already capped) body before the transcoder consumes it; the check runs once the
  gRPC path names the RPC and the token has been checked, and refuses unknown keys before
  routing.
"""

from __future__ import annotations

from collections.abc import Sequence

from vaultpay_gateway._types import Json, duration, typed
from vaultpay_gateway.body_limits import RpcCaps, body_limit_filters
from vaultpay_gateway.body_schema import BodySchemas
from vaultpay_gateway.clusters import JWKS_CLUSTER
from vaultpay_gateway.contract import ApiContract, Rpc
from vaultpay_gateway.errors import LOCAL_REPLY_MARK, TRANSCODE_FAILURE_HEADER
from vaultpay_gateway.json_body import capture_filter, check_filter
from vaultpay_gateway.ratelimits import client_ratelimit_filter, rpc_ratelimit_filter
from vaultpay_gateway.replies import replies_filter
from vaultpay_gateway.request_guard import request_guard_filter
from vaultpay_gateway.settings import GatewaySettings, RateLimit

__all__ = [
    "HEADER_MUTATION_FILTER",
    "INTERNAL_REPLY_HEADERS",
    "JWT_BEFORE_BODY_FILTER",
    "JWT_FILTER",
    "JWT_PROVIDER",
    "JWT_REQUIREMENT",
    "TRANSCODER_FILTER",
    "grpc_json_transcoder",
    "jwt_authn",
    "public_http_filters",
    "router",
    "transcoder_config",
]

JWT_FILTER = "envoy.filters.http.jwt_authn"
# The same check, before any body is buffered, on the routes that turn it on (the JSON route
# of a KYC file: a 14 MiB body is held whole before the transcoder and the JWT_FILTER).
JWT_BEFORE_BODY_FILTER = "vaultpay.jwt_authn.before_body"
JWT_PROVIDER = "vaultpay_auth"
JWT_REQUIREMENT = "access_token"
HEADER_MUTATION_FILTER = "envoy.filters.http.header_mutation"


def router() -> Json:
    # No x-envoy-upstream-service-time (or other x-envoy-*) on replies: nothing for clients.
    return {
        "name": "envoy.filters.http.router",
        "typed_config": typed(
            "envoy.extensions.filters.http.router.v3.Router", suppress_envoy_headers=True
        ),
    }


TRANSCODER_FILTER = "envoy.filters.http.grpc_json_transcoder"


def transcoder_config(
    descriptor_set: str,
    services: Sequence[str],
    *,
    max_response_bytes: int,
    max_request_bytes: int | None = None,
) -> Json:
    """The transcoder's `typed_config`; a route may carry another one (`body_limits`).

    The transcoder buffers a whole unary reply to render it: `max_response_bytes` (its
    default, 32 KiB, turns a long list page into a 500). Its request buffer is the route's
    buffer limit unless `max_request_bytes` says otherwise.
    """
    limits: Json = {"max_response_body_size": max_response_bytes}
    if max_request_bytes is not None:
        limits["max_request_body_size"] = max_request_bytes
    return typed(
        "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        proto_descriptor=descriptor_set,
        services=list(services),
        convert_grpc_status=True,
        **limits,
        print_options={
            "add_whitespace": False,
            "always_print_primitive_fields": True,
            "always_print_enums_as_ints": False,
            "preserve_proto_field_names": False,
            # One JSON object per line for server streaming (GATEWAY.md item 8).
            "stream_newline_delimited": True,
        },
        request_validation_options={
            "reject_unknown_method": True,
            "reject_unknown_query_parameters": True,
        },
    )


def grpc_json_transcoder(
    descriptor_set: str, services: Sequence[str], *, max_response_bytes: int
) -> Json:
    return {
        "name": TRANSCODER_FILTER,
        "typed_config": transcoder_config(
            descriptor_set, services, max_response_bytes=max_response_bytes
        ),
    }


# Marks the local reply mapper sets for the `replies` filter (`errors`), never for clients.
INTERNAL_REPLY_HEADERS = (LOCAL_REPLY_MARK, TRANSCODE_FAILURE_HEADER)


def _header_mutation() -> Json:
    """`Cache-Control: no-store` on every reply without a Cache-Control of its own, and no
    reply keeps an internal mark (`INTERNAL_REPLY_HEADERS`): `replies` removes them where
    it reads them, this removes them from every reply, whatever the request looked like."""
    no_store = {
        "append": {
            "header": {"key": "cache-control", "value": "no-store"},
            "append_action": "ADD_IF_ABSENT",
        }
    }
    internal = [{"remove": header} for header in INTERNAL_REPLY_HEADERS]
    return {
        "name": HEADER_MUTATION_FILTER,
        "typed_config": typed(
            "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            mutations={"response_mutations": [no_store, *internal]},
        ),
    }


def jwt_authn(settings: GatewaySettings, jwks_uri: str, name: str = JWT_FILTER) -> Json:
    """Edge JWT check; which routes need it is decided per route (`PerRouteConfig`; a route
    without one is not checked by this instance).

    Tokens are read only from `Authorization: Bearer` (never `?access_token=`, GATEWAY.md
    item 7) and forwarded untouched, because every service verifies them again.

    Until a first fetch of the JWKS succeeds, each request fetches for itself, and a failed
    fetch refuses it (`errors`: 503 AUTH_UNAVAILABLE, not a bad token). `fast_listener: false`
    would not hold the listeners back until there are keys: Envoy counts a failed first fetch
    as done too, and the fetch goes through this same Envoy's JWKS listener, which does not
    listen before start-up ends, so that first fetch always failed (tried: Ready as fast,
    two failed fetches, no GetJwks call reached auth).
    """
    jwt = settings.jwt
    provider = {
        "issuer": jwt.issuer,
        "audiences": [jwt.audience],
        "from_headers": [{"name": "Authorization", "value_prefix": "Bearer "}],
        "forward": True,
        "require_expiration": True,
        "clock_skew_seconds": jwt.clock_skew_seconds,
        "remote_jwks": {
            "http_uri": {"uri": jwks_uri, "cluster": JWKS_CLUSTER, "timeout": "2s"},
            "cache_duration": duration(jwt.jwks_cache_seconds),
            "async_fetch": {
                "fast_listener": True,
                "failed_refetch_duration": duration(jwt.jwks_failed_refetch_seconds),
            },
            "retry_policy": {
                "num_retries": 2,
                "retry_back_off": {"base_interval": "0.2s", "max_interval": "1s"},
            },
        },
    }
    return {
        "name": name,
        "typed_config": typed(
            "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            providers={JWT_PROVIDER: provider},
            requirement_map={JWT_REQUIREMENT: {"provider_name": JWT_PROVIDER}},
        ),
    }


def _field_message_types(contract: ApiContract) -> tuple[str, ...]:
    """The message types some field has: the only ones a transcoder type error can name."""
    return tuple(
        sorted(
            {
                f.message_type
                for m in contract.messages.values()
                for f in m.fields
                if f.message_type is not None
            }
        )
    )


def public_http_filters(
    settings: GatewaySettings,
    transcoded_services: Sequence[str],
    jwks_uri: str,
    body_schemas: BodySchemas,
    rpc_budgets: Sequence[tuple[Rpc, RateLimit]] = (),
    rpc_caps: Sequence[RpcCaps] = (),
    contract: ApiContract | None = None,
) -> list[Json]:
    """`contract` names the enums and messages of the type errors the `replies` filter words
    (without it, they are "has a value of the wrong type")."""
    return [
        _header_mutation(),
        # Before every filter that answers by itself (but header_mutation, which never does),
        # so it sees all their replies.
        replies_filter(
            contract.enums if contract is not None else None,
            _field_message_types(contract) if contract is not None else (),
        ),
        # Before every filter that answers by itself (replies apart), so that a browser can
        # read their refusals too (a 429's Retry-After, a 413): a filter's own reply carries
        # CORS headers only when cors saw the request on its way in. Preflights are answered
        # here, before the rate limits: cheap replies, cached by browsers for 10 minutes.
        {
            "name": "envoy.filters.http.cors",
            "typed_config": typed("envoy.extensions.filters.http.cors.v3.Cors"),
        },
        client_ratelimit_filter(settings),
        # Before either jwt_authn: it spells the bearer scheme as jwt_authn's case-sensitive
        # prefix wants it (the early one refused `bearer` on the KYC file routes).
        request_guard_filter(settings.max_path_bytes, settings.max_header_bytes),
        # Off but where a route turns it on (the KYC file's JSON route): a bad token is
        # refused before its body (up to 14 MiB) is read, not after it was buffered whole.
        jwt_authn(settings, jwks_uri, JWT_BEFORE_BODY_FILTER),
        *body_limit_filters(settings, rpc_caps),
        capture_filter(),
        grpc_json_transcoder(
            str(settings.descriptor_set.resolve()),
            transcoded_services,
            max_response_bytes=settings.max_json_response_bytes,
        ),
        *([rpc_ratelimit_filter(rpc_budgets, settings.max_tracked_clients)] if rpc_budgets else []),
        jwt_authn(settings, jwks_uri),
        check_filter(body_schemas),
        router(),
    ]
