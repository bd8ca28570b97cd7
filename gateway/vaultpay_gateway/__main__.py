"""Renders the gateway's Envoy config.

    python -m vaultpay_gateway --descriptor build/vaultpay.binpb --out var/gateway/envoy.yaml \
        [--listen 127.0.0.1:8080] [--admin 127.0.0.1:9901] [--upstream auth=127.0.0.1:50051 …] \
        [--cors-origin http://localhost:3000 …] [--access-log var/log/gateway-access.log] \
        [--max-request-bytes 1048576] [--rate-limit 1000/2000] [--jwks-socket PATH] [--no-docs] \
        [--reflection 127.0.0.1:9090] [--validate]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaultpay_gateway import (
    DEFAULT_UPSTREAMS,
    ContractError,
    EnvoyConfigError,
    GatewaySettings,
    HostPort,
    JwtSettings,
    RateLimit,
    SettingsError,
    build_config,
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


def _rate_limit(text: str) -> RateLimit:
    rate, _, burst = text.partition("/")
    try:
        per_second = int(rate)
        return RateLimit(max_tokens=int(burst or rate), tokens_per_fill=per_second)
    except (ValueError, SettingsError) as exc:
        raise argparse.ArgumentTypeError(f"expected RATE[/BURST] tokens, got {text!r}") from exc


def _parser() -> argparse.ArgumentParser:
    defaults = GatewaySettings(descriptor_set=Path("unused"))
    parser = argparse.ArgumentParser(prog="vaultpay_gateway", description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--descriptor", type=Path, required=True, help="descriptor set (make descriptor)")
    add("--out", type=Path, required=True, help="where to write the Envoy bootstrap")
    add("--listen", type=_address, default=defaults.listen, help="public listener host:port")
    add("--admin", type=_address, default=defaults.admin, help="admin interface host:port")
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
    add("--validate", action="store_true", help="run `envoy --mode validate` on the result")
    return parser


def parse_settings(argv: list[str] | None = None) -> tuple[GatewaySettings, Path, bool]:
    """Settings, output path and whether to validate, from command-line arguments."""
    args = _parser().parse_args(argv)
    settings = GatewaySettings(
        descriptor_set=args.descriptor,
        listen=args.listen,
        admin=args.admin,
        upstreams={**DEFAULT_UPSTREAMS, **dict(args.upstream)},
        cors_origins=tuple(args.cors_origin),
        max_request_bytes=args.max_request_bytes,
        trusted_proxy_hops=args.trusted_proxy_hops,
        rate_limit=args.rate_limit,
        access_log_path=args.access_log,
        jwt=JwtSettings(issuer=args.jwt_issuer, audience=args.jwt_audience),
        jwks_socket_path=args.jwks_socket,
        serve_docs=not args.no_docs,
        reflection=args.reflection,
    )
    return settings, args.out, bool(args.validate)


def main(argv: list[str] | None = None) -> int:
    try:
        settings, out, check = parse_settings(argv)
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
