"""Rate limits at the edge: per client address, with a global backstop and tighter budgets
for expensive public RPCs.

Two instances of Envoy's `local_ratelimit` filter:

1. `client_ratelimit_filter`, early in the chain (cheap rejections first): every request
   takes a token from its client's bucket (`GatewaySettings.client_rate_limit`, keyed on the
   client address the connection manager trusts, IPv6 by its /64: one host usually holds a
   whole /64, so a /128 key would let it pick a fresh bucket per request) and then one
   from the global bucket (`rate_limit`), so one client's flood empties only its own bucket
   while the global one still caps the gateway as a whole.
2. `rpc_ratelimit_filter`, right after the transcoder: by then `:path` is the exact gRPC path
   of the RPC for JSON and native gRPC clients alike, so a budget cannot be dodged by spelling
   the REST path differently. Each RPC of `rpc_rate_limits` gets a bucket per client address
   and RPC (client address + `rpc` descriptor entries); other RPCs pass untouched.

Buckets for client addresses are created on first use and kept in an LRU of
`max_tracked_clients` entries (Envoy's dynamic descriptors). A refused request answers 429
(`RESOURCE_EXHAUSTED` for gRPC) with `Retry-After`: the client filter's buckets refill every
second or so, so it names their interval; the RPC filter also sends `x-ratelimit-*` headers
(draft 03), from which the `replies` filter sets the exact wait of the bucket that refused.
"""

from __future__ import annotations

from collections.abc import Iterable

from vaultpay_gateway._types import Json, duration, typed
from vaultpay_gateway.contract import ApiContract, ContractError, Rpc
from vaultpay_gateway.settings import DEFAULT_RPC_RATE_LIMITS, GatewaySettings, RateLimit

__all__ = [
    "CLIENT_KEY",
    "CLIENT_RATELIMIT_FILTER",
    "RPC_KEY",
    "RPC_RATELIMIT_FILTER",
    "client_ratelimit_filter",
    "client_retry_after_seconds",
    "rpc_rate_limits",
    "rpc_ratelimit_filter",
]

CLIENT_RATELIMIT_FILTER = "envoy.filters.http.local_ratelimit"
RPC_RATELIMIT_FILTER = "vaultpay.rpc_ratelimit"
# The key Envoy's `masked_remote_address` rate limit action produces.
CLIENT_KEY = "masked_remote_address"
# IPv4 addresses whole, IPv6 addresses by their /64.
_CLIENT_ACTION = {"masked_remote_address": {"v4_prefix_mask_len": 32, "v6_prefix_mask_len": 64}}
RPC_KEY = "rpc"
_ALWAYS = {"numerator": 100, "denominator": "HUNDRED"}
_TYPE = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"


def _bucket(limit: RateLimit) -> Json:
    return {
        "max_tokens": limit.max_tokens,
        "tokens_per_fill": limit.tokens_per_fill,
        "fill_interval": duration(limit.fill_interval_seconds),
    }


def _retry_after(seconds: int) -> list[Json]:
    return [
        {
            "header": {"key": "retry-after", "value": str(seconds)},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    ]


def _enforced(runtime_prefix: str) -> Json:
    return {
        "filter_enabled": {"default_value": _ALWAYS, "runtime_key": f"{runtime_prefix}_enabled"},
        "filter_enforced": {"default_value": _ALWAYS, "runtime_key": f"{runtime_prefix}_enforced"},
        "rate_limited_as_resource_exhausted": True,
    }


def client_retry_after_seconds(settings: GatewaySettings) -> int:
    """The wait the client filter's refusals name (`Retry-After`; gRPC: `RetryInfo`)."""
    return max(
        settings.client_rate_limit.retry_after_seconds, settings.rate_limit.retry_after_seconds
    )


def client_ratelimit_filter(settings: GatewaySettings) -> Json:
    """The client's own bucket, then the global one."""
    client = settings.client_rate_limit
    wait = client_retry_after_seconds(settings)
    return {
        "name": CLIENT_RATELIMIT_FILTER,
        "typed_config": typed(
            _TYPE,
            stat_prefix="gateway_client",
            token_bucket=_bucket(settings.rate_limit),
            rate_limits=[{"actions": [_CLIENT_ACTION]}],
            descriptors=[{"entries": [{"key": CLIENT_KEY}], "token_bucket": _bucket(client)}],
            always_consume_default_token_bucket=True,
            max_dynamic_descriptors=settings.max_tracked_clients,
            response_headers_to_add=_retry_after(wait),
            **_enforced("gateway_ratelimit"),
        ),
    }


def rpc_rate_limits(
    contract: ApiContract, settings: GatewaySettings
) -> list[tuple[Rpc, RateLimit]]:
    """The budgeted RPCs, checked against the contract.

    A name of `DEFAULT_RPC_RATE_LIMITS` the contract does not have is skipped (a partial
    contract); any other name must be a routed RPC, so a typo cannot drop a budget silently.
    """
    routed = {rpc.full_name: rpc for rpc in contract.routed_rpcs()}
    wanted = {
        name: limit
        for name, limit in settings.rpc_rate_limits.items()
        if name in routed or name not in DEFAULT_RPC_RATE_LIMITS
    }
    unknown = sorted(set(wanted) - set(routed))
    if unknown:
        raise ContractError(f"rate limits for RPCs the gateway does not route: {unknown}")
    return [(routed[name], limit) for name, limit in sorted(wanted.items())]


def _rpc_action(rpc: Rpc) -> Json:
    return {
        "header_value_match": {
            "descriptor_key": RPC_KEY,
            "descriptor_value": rpc.full_name,
            "expect_match": True,
            "headers": [{"name": ":path", "string_match": {"exact": rpc.grpc_path}}],
        }
    }


def rpc_ratelimit_filter(budgets: Iterable[tuple[Rpc, RateLimit]], max_clients: int) -> Json:
    """A bucket per client address and budgeted RPC; no default bucket, so other RPCs pass."""
    budgets = list(budgets)
    wait = max((limit.retry_after_seconds for _, limit in budgets), default=1)
    return {
        "name": RPC_RATELIMIT_FILTER,
        "typed_config": typed(
            _TYPE,
            stat_prefix="gateway_rpc",
            rate_limits=[{"actions": [_CLIENT_ACTION, _rpc_action(rpc)]} for rpc, _ in budgets],
            descriptors=[
                {
                    "entries": [{"key": CLIENT_KEY}, {"key": RPC_KEY, "value": rpc.full_name}],
                    "token_bucket": _bucket(limit),
                }
                for rpc, limit in budgets
            ],
            max_dynamic_descriptors=max_clients,
            # The exact wait comes from x-ratelimit-reset (the `replies` filter); this is the
            # longest one, should that filter fail.
            response_headers_to_add=_retry_after(wait),
            enable_x_ratelimit_headers="DRAFT_VERSION_03",
            **_enforced("gateway_rpc_ratelimit"),
        ),
    }
