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

Anyone may reach it through the gateway, so it bounds what one client can make it do: a
stream answers at most `MAX_MESSAGES_PER_STREAM` requests (the next is refused with
RESOURCE_EXHAUSTED, ErrorInfo reason `RESOURCE_EXHAUSTED`, domain `vaultpay.gateway`;
grpcurl asks a few dozen at most), and the server runs at most
`MAX_CONCURRENT_RPCS` calls at once (more are refused with RESOURCE_EXHAUSTED by grpc
itself). Envoy's breaker in front of it (`clusters.MAX_REFLECTION_REQUESTS`) is lower, so the
health checks still get through while reflection streams fill the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from vaultpay_gateway.contract import ContractError, load_contract
from vaultpay_gateway.errors import ERROR_DOMAIN
from vaultpay_gateway.settings import HostPort, SettingsError

__all__ = [
    "MAX_CONCURRENT_RPCS",
    "MAX_MESSAGES_PER_STREAM",
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
# Requests one reflection stream answers; `grpcurl describe` of a whole service asks for one
# file per import, a few dozen at most.
MAX_MESSAGES_PER_STREAM = 200
# Calls the server runs at once, health checks included: above Envoy's breaker for the
# reflection cluster (100), so Envoy's health checks and the container's probe get through a
# server full of reflection streams.
MAX_CONCURRENT_RPCS = 128


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
    for reflection_file in _reflection_files():
        pool.Add(reflection_file)
    services = tuple(sorted(routed))
    return PublicDescriptors(pool, services)


def _reflection_files() -> list[descriptor_pb2.FileDescriptorProto]:
    """The reflection services' own files, v1alpha's and v1's, which the server lists and so
    must describe: without them `grpcurl describe` (every service) failed on "Symbol not
    found: grpc.reflection.v1.ServerReflection". grpcio-reflection ships only v1alpha's
    module; v1's file is the same messages and service under the v1 package (as the server
    answers v1 with the v1alpha servicer, `_v1_handler`)."""
    v1alpha = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(v1alpha)
    v1 = descriptor_pb2.FileDescriptorProto()
    v1.CopyFrom(v1alpha)
    v1.name = "grpc/reflection/v1/reflection.proto"
    v1.package = "grpc.reflection.v1"
    prefix = ".grpc.reflection.v1alpha."
    for message in v1.message_type:
        for message_field in message.field:
            if message_field.type_name.startswith(prefix):
                message_field.type_name = (
                    ".grpc.reflection.v1." + message_field.type_name[len(prefix) :]
                )
    for service in v1.service:
        for method in service.method:
            method.input_type = method.input_type.replace(prefix, ".grpc.reflection.v1.")
            method.output_type = method.output_type.replace(prefix, ".grpc.reflection.v1.")
    v1.ClearField("options")
    return [v1alpha, v1]


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


def _status_with_info(code: int, message: str) -> status_pb2.Status:
    """A `google.rpc.Status` whose ErrorInfo (domain `vaultpay.gateway`) names the code."""
    status = status_pb2.Status(code=code, message=message)
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=code_pb2.Code.Name(code), domain=ERROR_DOMAIN))
    status.details.append(info)
    return status


class _StreamCappedReflection:
    """grpcio-reflection's servicer, answering at most `max_messages` requests per stream.

    Its own servicer answers every message a stream carries: one stream within the edge's
    1 MiB body cap held some 150,000 `list_services` requests."""

    def __init__(self, servicer: Any, max_messages: int) -> None:
        self._servicer = servicer
        self._max_messages = max_messages
        # With an ErrorInfo, or the gateway's `replies` filter would put a generic text in
        # place of this one (`replies`, item 3).
        self._refusal = rpc_status.to_status(
            _status_with_info(
                code_pb2.RESOURCE_EXHAUSTED,
                f"a reflection stream answers at most {max_messages} requests; open a new stream",
            )
        )

    async def _at_most(
        self, requests: AsyncIterable[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        count = 0
        async for request in requests:
            count += 1
            if count > self._max_messages:
                refusal = self._refusal
                await context.abort(refusal.code, refusal.details, refusal.trailing_metadata)
            yield request

    async def ServerReflectionInfo(  # noqa: N802 - the RPC's name
        self, requests: AsyncIterable[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        replies = self._servicer.ServerReflectionInfo(self._at_most(requests, context), context)
        async for reply in replies:
            yield reply


def _v1_handler(servicer: _StreamCappedReflection) -> grpc.GenericRpcHandler:
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


async def start_server(
    descriptor_set: Path,
    address: str,
    *,
    max_messages_per_stream: int = MAX_MESSAGES_PER_STREAM,
    max_concurrent_rpcs: int = MAX_CONCURRENT_RPCS,
) -> tuple[grpc.aio.Server, int]:
    """Starts the reflection server on `address` (`host:port`, port 0 for any free one);
    returns it and the bound port."""
    public = public_descriptors(descriptor_set)
    # The services' metadata limit (`vaultpay_common.grpc.server.MAX_METADATA_BYTES`): what
    # the edge lets through (`settings.MAX_HEADER_BYTES`) reaches it with Envoy's headers.
    server = grpc.aio.server(
        options=[
            ("grpc.max_metadata_size", 24 * 1024),
            ("grpc.absolute_max_metadata_size", 32 * 1024),
        ],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    servicer = _StreamCappedReflection(
        reflection.aio.ReflectionServicer(
            [*public.services, *REFLECTION_SERVICES], pool=public.pool
        ),
        max_messages_per_stream,
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
