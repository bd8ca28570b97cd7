"""Body caps per RPC: the default for every route, larger ones where `rpc_limits` says.

Envoy's `body_size_limit` filter counts the body as it streams by (no buffering) and answers
413 once it passes the cap, or at once when `Content-Length` already says so. It has no
per-route config, so the chain holds one instance per distinct cap: the default one
(`BODY_LIMIT_FILTER`, `GatewaySettings.max_request_bytes`) is on everywhere, the others
(`vaultpay.body_size_limit.<bytes>`) are off unless a route turns them on, and a route that
turns one on turns the default off (`body_limit_per_route`).

Envoy decides which filters a request passes through from the route it matches on arrival,
before any filter runs. For native gRPC that is the RPC's own route (`routes._rpc_route`). A
JSON request arrives on its REST path, which the RPC routes (exact gRPC paths) do not match;
only the transcoder turns it into the RPC. So an RPC with larger JSON caps also gets a route
on each of its REST bindings (`json_route_match`: the binding's method, its path template as
an anchored regex and, unless the RPC is public, an `Authorization` header), placed before the
JSON catch-all. Besides the body cap, that route sizes what holds a JSON body whole: the
route's request buffer (the JSON body check's copy) and the transcoder's buffers (a per-route
transcoder config). These routes only size buffers: which RPC a request reaches, and whether
it needs a token, is still decided after the transcoder, on the RPC's route. A request the
regex matches that the transcoder maps to another RPC (no binding of the contract overlaps
so today) would only get the larger buffers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from vaultpay_gateway._types import Json, typed
from vaultpay_gateway.contract import ApiContract, ContractError, HttpBinding, Rpc
from vaultpay_gateway.settings import DEFAULT_RPC_LIMITS, GatewaySettings, RpcLimits

__all__ = [
    "BODY_LIMIT_FILTER",
    "RpcCaps",
    "body_limit_filters",
    "body_limit_per_route",
    "json_route_match",
    "rpc_caps",
    "template_regex",
]

BODY_LIMIT_FILTER = "envoy.filters.http.body_size_limit"
_RAISED_PREFIX = "vaultpay.body_size_limit."
_BODY_LIMIT_TYPE = "envoy.extensions.filters.http.body_size_limit.v3.BodySizeLimit"
_FILTER_CONFIG = "envoy.config.route.v3.FilterConfig"
# A path template segment: `*`, `**`, a variable `{name}` / `{name=segments}`, or a literal.
_TOKEN = re.compile(r"\{([^}=]+)(?:=([^}]*))?\}|\*\*|\*|[^/{}*]+|/")


@dataclass(frozen=True, slots=True)
class RpcCaps:
    """The effective caps of one RPC of `rpc_limits`, the defaults filled in.

    `json_route`: its REST bindings get routes of their own (`json_route_match`), because a
    JSON cap differs from the default.
    """

    rpc: Rpc
    grpc_request_bytes: int
    json_request_bytes: int
    json_response_bytes: int
    timeout_seconds: float | None
    json_route: bool


def rpc_caps(contract: ApiContract, settings: GatewaySettings) -> list[RpcCaps]:
    """The RPCs of `settings.rpc_limits`, checked against the contract.

    A name of `DEFAULT_RPC_LIMITS` the contract does not have is skipped (a partial
    contract); any other name must be a routed RPC, and JSON caps need an HTTP binding, so a
    typo cannot drop a cap silently.
    """
    routed = {rpc.full_name: rpc for rpc in contract.routed_rpcs()}
    wanted = {
        name: limits
        for name, limits in settings.rpc_limits.items()
        if name in routed or name not in DEFAULT_RPC_LIMITS
    }
    unknown = sorted(set(wanted) - set(routed))
    if unknown:
        raise ContractError(f"body limits for RPCs the gateway does not route: {unknown}")
    caps = []
    for name, limits in sorted(wanted.items()):
        rpc = routed[name]
        if not rpc.http and (limits.json_request_bytes or limits.json_response_bytes):
            raise ContractError(f"JSON body limits for {name}, which has no HTTP route")
        caps.append(_caps(rpc, limits, settings))
    return caps


def _caps(rpc: Rpc, limits: RpcLimits, settings: GatewaySettings) -> RpcCaps:
    json_request = limits.json_request_bytes or settings.max_request_bytes
    json_response = limits.json_response_bytes or settings.max_json_response_bytes
    return RpcCaps(
        rpc=rpc,
        grpc_request_bytes=limits.grpc_request_bytes or settings.max_request_bytes,
        json_request_bytes=json_request,
        json_response_bytes=json_response,
        timeout_seconds=limits.timeout_seconds,
        json_route=bool(rpc.http)
        and (json_request, json_response)
        != (settings.max_request_bytes, settings.max_json_response_bytes),
    )


def _raised_filter(cap: int) -> str:
    return f"{_RAISED_PREFIX}{cap}"


def _body_size_limit(name: str, cap: int, *, disabled: bool = False) -> Json:
    entry: Json = {"name": name, "typed_config": typed(_BODY_LIMIT_TYPE, max_request_bytes=cap)}
    if disabled:
        entry["disabled"] = True
    return entry


def body_limit_filters(settings: GatewaySettings, caps: Sequence[RpcCaps]) -> list[Json]:
    """The default instance, then one instance (off by default) per other cap in use."""
    raised = {c.grpc_request_bytes for c in caps} | {
        c.json_request_bytes for c in caps if c.json_route
    }
    raised.discard(settings.max_request_bytes)
    return [
        _body_size_limit(BODY_LIMIT_FILTER, settings.max_request_bytes),
        *(_body_size_limit(_raised_filter(cap), cap, disabled=True) for cap in sorted(raised)),
    ]


def body_limit_per_route(cap: int, default: int) -> Json:
    """`typed_per_filter_config` entries that put a route's requests under `cap`."""
    if cap == default:
        return {}
    return {
        BODY_LIMIT_FILTER: typed(_FILTER_CONFIG, disabled=True),
        # An empty `config` turns on a filter that is off by default (it has no route config).
        _raised_filter(cap): typed(_FILTER_CONFIG, config={}),
    }


def template_regex(template: str) -> str:
    """A `google.api.http` path template as an RE2 regex for the whole path.

    `{name}` and `*` match one segment, `**` any number of them, `{name=a/*}` what its
    segments match; the custom verb (`:approve`) is literal. Envoy matches it against the
    path without the query string, after normalisation.

        template_regex("/v1/admin/kyc/{submission_id}") == "/v1/admin/kyc/[^/]+"
    """
    path, sep, verb = template.rpartition(":")
    if not sep or any(c in verb for c in "/{}"):
        path, verb = template, ""
    if not path.startswith("/"):
        raise ContractError(f"path template does not start with '/': {template!r}")
    return _segments_regex(path, template) + (re.escape(":" + verb) if verb else "")


def _segments_regex(segments: str, template: str) -> str:
    out: list[str] = []
    at = 0
    for match in _TOKEN.finditer(segments):
        if match.start() != at:
            raise ContractError(f"cannot read path template {template!r}")
        at = match.end()
        piece = match.group(0)
        if match.group(1) is not None:
            inner = match.group(2)
            out.append("[^/]+" if inner in (None, "*") else _segments_regex(inner, template))
        elif piece == "**":
            out.append(".*")
        elif piece == "*":
            out.append("[^/]+")
        else:
            out.append(re.escape(piece))
    if at != len(segments):
        raise ContractError(f"cannot read path template {template!r}")
    return "".join(out)


def json_route_match(binding: HttpBinding, *, needs_token: bool) -> Json:
    """A route match for the requests of one REST binding: its method and path template.

    With `needs_token`, only requests that carry an `Authorization` header match: the body
    is buffered whole before jwt_authn runs (after the transcoder), so a request that cannot
    pass it anyway keeps the default cap instead of holding a large buffer until then.
    """
    headers: list[Json] = [{"name": ":method", "string_match": {"exact": binding.method}}]
    if needs_token:
        headers.append({"name": "authorization", "present_match": True})
    template = binding.template.split("?", 1)[0]
    if not any(c in template for c in "{*"):
        return {"path": template, "headers": headers}
    return {"safe_regex": {"regex": template_regex(template)}, "headers": headers}
