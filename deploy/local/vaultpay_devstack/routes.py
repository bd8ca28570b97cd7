"""Keeps the contract's HTTP routes from changing under web clients.

    python -m vaultpay_devstack.routes --write protos/baseline/http_routes.json
    python -m vaultpay_devstack.routes --check protos/baseline/http_routes.json

Web clients call the REST paths that `google.api.http` gives each RPC, so a renamed path
or a changed body mapping breaks them as surely as a renumbered field. `buf breaking` does
not look at these annotations (GATEWAY.md, item 12), so the routes are recorded in a JSON
baseline next to the binary one and compared here, read from a freshly built descriptor
set: a route of the baseline that is no longer served fails the check; new routes are only
reported. To move a path without breaking clients, keep the old one as an
`additional_bindings` entry.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from vaultpay_devstack.protogen import generate_descriptor_set

__all__ = [
    "Binding",
    "ContractMethod",
    "Route",
    "RouteChanges",
    "collect_routes",
    "compare_routes",
    "contract_methods",
    "http_route",
    "load_contract",
    "main",
    "read_routes",
    "write_routes",
]

_OWN_FILES_PREFIX = "vaultpay/"


@dataclass(frozen=True, order=True)
class Binding:
    """One HTTP mapping of an RPC: what a web client calls."""

    verb: str
    path: str
    body: str = ""
    response_body: str = ""

    def __str__(self) -> str:
        text = f"{self.verb} {self.path}"
        if self.body:
            text += f' (body "{self.body}")'
        if self.response_body:
            text += f' (response_body "{self.response_body}")'
        return text

    def to_json(self) -> dict[str, str]:
        return {
            "verb": self.verb,
            "path": self.path,
            "body": self.body,
            "response_body": self.response_body,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Binding:
        return cls(
            verb=str(data["verb"]),
            path=str(data["path"]),
            body=str(data.get("body", "")),
            response_body=str(data.get("response_body", "")),
        )


@dataclass(frozen=True)
class Route:
    """The primary binding of an RPC plus its `additional_bindings`."""

    primary: Binding
    additional: tuple[Binding, ...] = ()

    @property
    def bindings(self) -> tuple[Binding, ...]:
        return (self.primary, *self.additional)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.primary.to_json(),
            "additional_bindings": [b.to_json() for b in self.additional],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Route:
        extra = data.get("additional_bindings", [])
        return cls(Binding.from_json(data), tuple(Binding.from_json(b) for b in extra))


@dataclass(frozen=True)
class ContractMethod:
    """An RPC of one of our services, with the descriptor its options live on."""

    package: str
    service: str
    descriptor: descriptor_pb2.MethodDescriptorProto

    @property
    def name(self) -> str:
        return self.descriptor.name

    @property
    def full_name(self) -> str:
        """Protobuf full name, e.g. `vaultpay.wallet.v1.WalletService.CreateWallet`."""
        return f"{self.package}.{self.service}.{self.name}"


@dataclass(frozen=True)
class RouteChanges:
    """What differs between a baseline of routes and the contract now."""

    broken: list[str]
    added: list[str]


def load_contract() -> descriptor_pb2.FileDescriptorSet:
    """Builds the descriptor set from protos/ as the gateway gets it, and parses it.

    Built fresh rather than read from build/ so that a stale file can never hide a change.
    """
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "contract.binpb"
        generate_descriptor_set(target)
        return descriptor_pb2.FileDescriptorSet.FromString(target.read_bytes())


def contract_methods(files: descriptor_pb2.FileDescriptorSet) -> Iterator[ContractMethod]:
    """Every RPC of every service declared in our own protos (not the vendored ones)."""
    for proto in files.file:
        if not proto.name.startswith(_OWN_FILES_PREFIX):
            continue
        for service in proto.service:
            for method in service.method:
                yield ContractMethod(proto.package, service.name, method)


def _binding(rule: http_pb2.HttpRule) -> Binding:
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        raise ValueError("google.api.http rule without a verb")
    if pattern == "custom":
        verb, path = rule.custom.kind.upper(), rule.custom.path
    else:
        verb, path = pattern.upper(), str(getattr(rule, pattern))
    return Binding(verb, path, rule.body, rule.response_body)


def http_route(method: descriptor_pb2.MethodDescriptorProto) -> Route | None:
    """The method's `google.api.http` route, or None when it has none."""
    if not method.options.HasExtension(annotations_pb2.http):
        return None
    rule = method.options.Extensions[annotations_pb2.http]
    return Route(_binding(rule), tuple(_binding(extra) for extra in rule.additional_bindings))


def collect_routes(files: descriptor_pb2.FileDescriptorSet) -> dict[str, Route]:
    """Full method name -> route, for every RPC that has one."""
    routes = {}
    for method in contract_methods(files):
        route = http_route(method.descriptor)
        if route is not None:
            routes[method.full_name] = route
    return dict(sorted(routes.items()))


def compare_routes(baseline: dict[str, Route], current: dict[str, Route]) -> RouteChanges:
    """Lists baseline bindings no longer served (breaking) and new bindings (harmless).

    Bindings are compared as a set per RPC, so moving a path while keeping the old one as
    an additional binding is not a break.
    """
    broken: list[str] = []
    added: list[str] = []
    for name, old in baseline.items():
        new = current.get(name)
        if new is None:
            broken += [f"{name}: {b} removed (the RPC has no route now)" for b in old.bindings]
            continue
        served = set(new.bindings)
        broken += [
            f"{name}: {b} changed or removed (now: {', '.join(map(str, new.bindings))})"
            for b in old.bindings
            if b not in served
        ]
    for name, new in current.items():
        known = set(baseline[name].bindings) if name in baseline else set()
        added += [f"{name}: {b}" for b in new.bindings if b not in known]
    return RouteChanges(broken, added)


def write_routes(routes: dict[str, Route], target: Path) -> None:
    """Writes the baseline JSON: sorted, indented, one trailing newline (diff-friendly)."""
    data = {name: route.to_json() for name, route in sorted(routes.items())}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def read_routes(source: Path) -> dict[str, Route]:
    """Reads a baseline written by write_routes."""
    data = json.loads(source.read_text(encoding="utf-8"))
    return {name: Route.from_json(route) for name, route in data.items()}


def _check(baseline_path: Path) -> int:
    if not baseline_path.is_file():
        print(f"no route baseline at {baseline_path}; create it with --write", file=sys.stderr)
        return 1
    current = collect_routes(load_contract())
    changes = compare_routes(read_routes(baseline_path), current)
    for line in changes.added:
        print(f"info: new HTTP route {line}")
    if changes.broken:
        print(
            f"HTTP routes of {baseline_path} are no longer served; web clients call them.\n"
            "Keep the old path as an additional_bindings entry, or, if the break is agreed,\n"
            "rewrite the baseline with --write:",
            file=sys.stderr,
        )
        print("\n".join(f"  {line}" for line in changes.broken), file=sys.stderr)
        return 1
    print(f"HTTP routes match {baseline_path} ({len(current)} routes)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", type=Path, metavar="JSON", help="record the routes here")
    action.add_argument("--check", type=Path, metavar="JSON", help="compare with this baseline")
    args = parser.parse_args(argv)

    if args.check:
        return _check(args.check)
    routes = collect_routes(load_contract())
    write_routes(routes, args.write)
    print(f"{len(routes)} HTTP routes written to {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
