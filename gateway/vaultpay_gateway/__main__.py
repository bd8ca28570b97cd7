"""Renders the gateway's Envoy config.

    python -m vaultpay_gateway --descriptor build/vaultpay.binpb --out var/gateway/envoy.yaml \
        [--listen 127.0.0.1:8080] [--admin 127.0.0.1:9901 | --admin unix:/abs/dir/admin.sock] \
        [--ready-listen 127.0.0.1:9902] [--upstream auth=127.0.0.1:50051 …] \
        [--cors-origin http://localhost:3000 …] [--access-log var/log/gateway-access.log] \
        [--max-request-bytes 1048576] [--kyc-document-max-bytes 10485760] \
        [--rate-limit 1000/2000] [--client-rate-limit 100/200] \
        [--rpc-rate-limit vaultpay.auth.v1.AuthService.Login=10/10 …] [--jwks-socket PATH] \
        [--identity-secret-env-prefix VAULTPAY_GATEWAY_SECRET | --no-identity] [--no-docs] \
        [--reflection 127.0.0.1:9090] [--max-heap-bytes 1073741824] [--max-connections 10000] \
        [--validate]

Rate limits: `--rate-limit` is the global bucket and `--client-rate-limit` each client
address's, both RATE[/BURST] per second; `--rpc-rate-limit RPC=RATE[/BURST]` sets a budget
per client address for one RPC (full name) in requests per minute, `RPC=off` removes it, and
`*` stands for every RPC with a default budget.

Body caps: `--max-request-bytes` for every route; the KYC RPCs that carry a document file get
caps derived from `--kyc-document-max-bytes`, which must be kyc's `KYC_DOCUMENT_MAX_BYTES`.

Gateway secrets: Envoy sends each service its own, from its environment variable
`PREFIX_<SERVICE>` (VAULTPAY_GATEWAY_SECRET_AUTH, …_WALLET, …_TRANSFER, …_KYC). Run where
those variables are set (beside Envoy), the generator refuses a missing, short or shared one;
anywhere, it refuses the prefix alone (VAULTPAY_GATEWAY_SECRET: the one secret every service
shared before).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vaultpay_gateway import (
    DEFAULT_RPC_LIMITS,
    DEFAULT_RPC_RATE_LIMITS,
    DEFAULT_UPSTREAMS,
    KYC_DOCUMENT_MAX_BYTES,
    ContractError,
    EnvoyConfigError,
    GatewaySettings,
    HostPort,
    JwtSettings,
    RateLimit,
    SettingsError,
    UnixSocket,
    build_config,
    gateway_secret_env,
    identity_env_problems,
    kyc_file_limits,
    validate,
)

__all__ = ["main", "parse_settings"]


def _upstream(text: str) -> tuple[str, HostPort]:
    name, sep, address = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=HOST:PORT, got {text!r}")
    try:
        return name, HostPort.parse(address)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _address(text: str) -> HostPort:
    try:
        return HostPort.parse(text)
    except SettingsError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _admin(text: str) -> HostPort | UnixSocket:
    if text.startswith("unix:"):
        try:
            return UnixSocket(Path(text.removeprefix("unix:")))
        except SettingsError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc
    return _address(text)


def _rate_limit(text: str) -> RateLimit:
    rate, _, burst = text.partition("/")
    try:
        per_second = int(rate)
        return RateLimit(max_tokens=int(burst or rate), tokens_per_fill=per_second)
    except (ValueError, SettingsError) as exc:
        raise argparse.ArgumentTypeError(f"expected RATE[/BURST] tokens, got {text!r}") from exc


def _rpc_rate_limit(text: str) -> tuple[str, RateLimit | None]:
    """`RPC=RATE[/BURST]` (per minute) or `RPC=off`."""
    name, sep, spec = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected RPC=RATE[/BURST] or RPC=off, got {text!r}")
    if spec == "off":
        return name, None
    rate, _, burst = spec.partition("/")
    try:
        return name, RateLimit.per_minute(int(rate), burst=int(burst) if burst else None)
    except (ValueError, SettingsError) as exc:
        raise argparse.ArgumentTypeError(f"expected RATE[/BURST] per minute, got {text!r}") from exc


def _rpc_rate_limits(
    overrides: list[tuple[str, RateLimit | None]],
) -> dict[str, RateLimit]:
    limits: dict[str, RateLimit] = dict(DEFAULT_RPC_RATE_LIMITS)
    for name, limit in overrides:
        for rpc in list(limits) if name == "*" else [name]:
            if limit is None:
                limits.pop(rpc, None)
            else:
                limits[rpc] = limit
    return limits


def _parser() -> argparse.ArgumentParser:
    defaults = GatewaySettings(descriptor_set=Path("unused"))
    parser = argparse.ArgumentParser(prog="vaultpay_gateway", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--descriptor", type=Path, required=True, help="descriptor set (make descriptor)")
    add("--out", type=Path, required=True, help="where to write the Envoy bootstrap")
    add("--listen", type=_address, default=defaults.listen, help="public listener host:port")
    add(
        "--admin",
        type=_admin,
        default=defaults.admin,
        help="admin interface: host:port, or unix:/absolute/path (made 0600, its directory 0700)",
    )
    add(
        "--ready-listen",
        type=_address,
        metavar="HOST:PORT",
        help="a listener that answers only GET /ready (from the admin interface), for probes",
    )
    add(
        "--upstream",
        type=_upstream,
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help=f"service address (defaults: {', '.join(f'{k}={v}' for k, v in DEFAULT_UPSTREAMS.items())})",
    )
    add("--cors-origin", action="append", default=[], help="allowed browser origin (repeatable)")
    add("--access-log", type=Path, help="JSON access log file (default: stdout)")
    add("--max-request-bytes", type=int, default=defaults.max_request_bytes)
    add(
        "--kyc-document-max-bytes",
        type=int,
        default=KYC_DOCUMENT_MAX_BYTES,
        metavar="BYTES",
        help="kyc's KYC_DOCUMENT_MAX_BYTES: the KYC routes that carry a file get caps derived "
        f"from it ({KYC_DOCUMENT_MAX_BYTES})",
    )
    add(
        "--trusted-proxy-hops",
        type=int,
        default=defaults.trusted_proxy_hops,
        help="proxies in front of the gateway whose x-forwarded-for is trusted (0)",
    )
    add(
        "--rate-limit",
        type=_rate_limit,
        default=defaults.rate_limit,
        metavar="RATE[/BURST]",
        help="global token bucket: tokens per second and bucket size",
    )
    add(
        "--client-rate-limit",
        type=_rate_limit,
        default=defaults.client_rate_limit,
        metavar="RATE[/BURST]",
        help="each client address's token bucket: tokens per second and bucket size",
    )
    add(
        "--rpc-rate-limit",
        type=_rpc_rate_limit,
        action="append",
        default=[],
        metavar="RPC=RATE[/BURST]",
        help="per client address and RPC, per minute; RPC=off removes a budget, * is every RPC "
        "with a default budget (repeatable)",
    )
    identity = parser.add_mutually_exclusive_group()
    identity.add_argument(
        "--identity-secret-env-prefix",
        default=defaults.identity_secret_env_prefix,
        metavar="PREFIX",
        help="Envoy proves the gateway to each service with the value of its environment "
        "variable PREFIX_<SERVICE>, that service's own secret "
        f"({defaults.identity_secret_env_prefix}: {defaults.identity_secret_env('auth')}, …)",
    )
    # Before each service had a secret of its own: refused with a word, not taken for the
    # prefix (its old value named the one variable every service shared).
    identity.add_argument("--identity-secret-env", help=argparse.SUPPRESS)
    identity.add_argument(
        "--no-identity",
        action="store_true",
        help="send no identity header to the services (they then ignore the client address)",
    )
    add("--jwks-socket", help="Unix socket of the JWKS-only listener (default: abstract, Linux)")
    add("--jwt-issuer", default=defaults.jwt.issuer)
    add("--jwt-audience", default=defaults.jwt.audience)
    add("--no-docs", action="store_true", help="do not serve /docs (Swagger UI, OpenAPI)")
    add(
        "--reflection",
        type=_address,
        metavar="HOST:PORT",
        help="route gRPC server reflection to this `vaultpay_gateway.reflection` server",
    )
    add(
        "--max-heap-bytes",
        type=int,
        default=defaults.max_heap_bytes,
        help="Envoy's heap bound for its overload manager; keep it below the memory limit "
        f"({defaults.max_heap_bytes})",
    )
    add(
        "--max-connections",
        type=int,
        default=defaults.max_downstream_connections,
        help=f"client connections held at once ({defaults.max_downstream_connections})",
    )
    add("--validate", action="store_true", help="run `envoy --mode validate` on the result")
    return parser


def parse_settings(argv: list[str] | None = None) -> tuple[GatewaySettings, Path, bool]:
    """Settings, output path and whether to validate, from command-line arguments."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.identity_secret_env is not None:
        parser.error(
            "--identity-secret-env is gone: each service now has a gateway secret of its own,"
            " which Envoy reads from PREFIX_<SERVICE> (--identity-secret-env-prefix, default"
            " VAULTPAY_GATEWAY_SECRET)"
        )
    settings = GatewaySettings(
        descriptor_set=args.descriptor,
        listen=args.listen,
        admin=args.admin,
        ready_listen=args.ready_listen,
        upstreams={**DEFAULT_UPSTREAMS, **dict(args.upstream)},
        cors_origins=tuple(args.cors_origin),
        max_request_bytes=args.max_request_bytes,
        rpc_limits={**DEFAULT_RPC_LIMITS, **kyc_file_limits(args.kyc_document_max_bytes)},
        trusted_proxy_hops=args.trusted_proxy_hops,
        rate_limit=args.rate_limit,
        client_rate_limit=args.client_rate_limit,
        rpc_rate_limits=_rpc_rate_limits(args.rpc_rate_limit),
        identity_secret_env_prefix=None if args.no_identity else args.identity_secret_env_prefix,
        access_log_path=args.access_log,
        jwt=JwtSettings(issuer=args.jwt_issuer, audience=args.jwt_audience),
        jwks_socket_path=args.jwks_socket,
        serve_docs=not args.no_docs,
        reflection=args.reflection,
        max_heap_bytes=args.max_heap_bytes,
        max_downstream_connections=args.max_connections,
    )
    return settings, args.out, bool(args.validate)


def _check_identity_environment(settings: GatewaySettings) -> None:
    """Refuses the gateway secrets of this process's environment when it holds any: run by
    hand beside Envoy, it is Envoy's. Compose, Kubernetes and the local runner render without
    them; there only the old shared variable (the prefix alone) is refused."""
    prefix = settings.identity_secret_env_prefix
    if prefix is None:
        return
    names = [prefix, *(gateway_secret_env(upstream, prefix) for upstream in settings.upstreams)]
    if any(name in os.environ for name in names):
        problems = identity_env_problems(settings, os.environ)
        if problems:
            raise SettingsError("; ".join(problems))


def main(argv: list[str] | None = None) -> int:
    try:
        settings, out, check = parse_settings(argv)
        _check_identity_environment(settings)
        path = build_config(settings, out)
        if check:
            validate(path)
    except (SettingsError, ContractError, EnvoyConfigError) as exc:
        print(f"vaultpay_gateway: {exc}", file=sys.stderr)
        return 1
    print(f"gateway config written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
