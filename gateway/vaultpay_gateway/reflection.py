"""Server reflection for the gateway: the public API, and nothing else, on one port.

    python -m vaultpay_gateway.reflection --descriptor build/vaultpay.binpb \
        --listen 127.0.0.1:9090

Each service answers reflection for its own services only, so a reflection client pointed at
the gateway would see whichever service Envoy happened to route to. This small grpc.aio server
answers `grpc.reflection.v1alpha.ServerReflection` (what grpcurl 1.8.6 and grpcio-reflection
speak) and `grpc.reflection.v1.ServerReflection` (same messages, newer name) from the
contract's descriptor set, and Envoy routes both paths to it (`GatewaySettings.reflection`).

What it shows is exactly what the gateway routes (`contract.ApiContract.routed_rpcs`):

- internal services (`…InternalService`, or every RPC `internal`) are removed from the files
  it serves, so `list` does not name them and `describe` does not find them; nor their
  messages: a `vaultpay.*` message no routed RPC's request or reply reaches (through its
  fields), and no extension declares, is removed too, so `describe
  vaultpay.auth.v1.IssueServiceTokenRequest` finds nothing (enums stay: plain values);
- RPCs of public services that the gateway does not route (marked `internal`, or without an
  access rule) are removed from their service.

It also serves `grpc.health.v1.Health` (SERVING), so Envoy health checks it like any upstream.
It holds no secrets and reads nothing but the descriptor set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from vaultpay_gateway.contract import ContractError, load_contract
from vaultpay_gateway.settings import HostPort, SettingsError

__all__ = [
    "REFLECTION_SERVICES",
    "PublicDescriptors",
    "main",
    "public_descriptors",
    "reflection_paths",
    "serve",
    "start_server",
]

_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_SERVICES = (_V1ALPHA, _V1)
_METHOD = "ServerReflectionInfo"


def reflection_paths() -> tuple[str, ...]:
    """The gRPC paths Envoy routes to this server."""
    return tuple(f"/{service}/{_METHOD}" for service in REFLECTION_SERVICES)


@dataclass(frozen=True)
class PublicDescriptors:
    """The trimmed descriptor pool and the services reflection lists."""

    pool: descriptor_pool.DescriptorPool
    services: tuple[str, ...]


def public_descriptors(descriptor_set: Path) -> PublicDescriptors:
    """The descriptor set without internal services and unrouted RPCs, as a fresh pool."""
    contract = load_contract(descriptor_set)
    routed: dict[str, set[str]] = {}
    for rpc in contract.routed_rpcs():
        routed.setdefault(rpc.service, set()).add(rpc.name)
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    pool = descriptor_pool.DescriptorPool()
    trimmed_files: list[descriptor_pb2.FileDescriptorProto] = []
    for file in files:
        trimmed = descriptor_pb2.FileDescriptorProto()
        trimmed.CopyFrom(file)
        if file.package.startswith("vaultpay."):
            del trimmed.service[:]
            for service in file.service:
                methods = routed.get(f"{file.package}.{service.name}")
                if not methods:
                    continue
                kept = trimmed.service.add()
                kept.CopyFrom(service)
                del kept.method[:]
                kept.method.extend(m for m in service.method if m.name in methods)
        trimmed_files.append(trimmed)
    reachable = _reachable_messages(trimmed_files)
    for trimmed in trimmed_files:
        if trimmed.package.startswith("vaultpay."):
            used = [m for m in trimmed.message_type if f"{trimmed.package}.{m.name}" in reachable]
            del trimmed.message_type[:]
            trimmed.message_type.extend(used)
        # Files come in dependency order (protoc --include_imports), as Add requires.
        pool.Add(trimmed)
    services = tuple(sorted(routed))
    return PublicDescriptors(pool, services)


def _reachable_messages(files: Sequence[descriptor_pb2.FileDescriptorProto]) -> set[str]:
    """Full names (no leading dot) of the messages the kept services' RPCs and the files'
    extensions reach, following message-typed fields (nested messages included)."""
    messages: dict[str, descriptor_pb2.DescriptorProto] = {}

    def index(prefix: str, found: Sequence[descriptor_pb2.DescriptorProto]) -> None:
        for message in found:
            name = f"{prefix}.{message.name}"
            messages[name] = message
            index(name, message.nested_type)

    roots: list[str] = []
    for file in files:
        index(file.package, file.message_type)
        roots += [m.input_type for s in file.service for m in s.method]
        roots += [m.output_type for s in file.service for m in s.method]
        roots += [e.type_name for e in file.extension if e.type_name]
    reached: set[str] = set()
    pending = [name.lstrip(".") for name in roots]
    while pending:
        name = pending.pop()
        if name in reached or name not in messages:
            continue
        reached.add(name)
        # Its enclosing messages are kept with it (a nested type lives in its parent).
        parent = name.rsplit(".", 1)[0]
        pending.append(parent)
        message = messages[name]
        pending += [f.type_name.lstrip(".") for f in message.field if f.type_name]
        pending += [f"{name}.{nested.name}" for nested in message.nested_type]
    return reached


def _v1_handler(servicer: reflection_pb2_grpc.ServerReflectionServicer) -> grpc.GenericRpcHandler:
    """`grpc.reflection.v1` has the v1alpha messages field for field: one servicer, two names."""
    return grpc.method_handlers_generic_handler(
        _V1,
        {
            _METHOD: grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )


async def start_server(descriptor_set: Path, address: str) -> tuple[grpc.aio.Server, int]:
    """Starts the reflection server on `address` (`host:port`, port 0 for any free one);
    returns it and the bound port."""
    public = public_descriptors(descriptor_set)
    # The services' metadata limit (`vaultpay_common.grpc.server.MAX_METADATA_BYTES`): what
    # the edge lets through (`settings.MAX_HEADER_BYTES`) reaches it with Envoy's headers.
    server = grpc.aio.server(
        options=[
            ("grpc.max_metadata_size", 24 * 1024),
            ("grpc.absolute_max_metadata_size", 32 * 1024),
        ]
    )
    servicer = reflection.aio.ReflectionServicer(
        [*public.services, *REFLECTION_SERVICES], pool=public.pool
    )
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((_v1_handler(servicer),))
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    return server, port


async def serve(descriptor_set: Path, listen: HostPort) -> None:
    """Runs until SIGTERM or SIGINT, then stops (in-flight streams get a second)."""
    server, port = await start_server(descriptor_set, str(listen))
    print(f"reflection for the public API on {listen.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vaultpay_gateway.reflection", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--descriptor", type=Path, required=True, help="descriptor set")
    parser.add_argument(
        "--listen", default="127.0.0.1:9090", help="host:port (default %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        listen = HostPort.parse(args.listen)
        asyncio.run(serve(args.descriptor, listen))
    except (SettingsError, ContractError, OSError) as exc:
        print(f"vaultpay_gateway.reflection: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
