"""Readiness probes: gRPC health for services, the admin `/ready` endpoint for Envoy.

python -m vaultpay_devstack.probes 127.0.0.1:50051   # exit 0 when SERVING (container checks)
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["GrpcHealthProbe", "http_ok", "main"]


class GrpcHealthProbe:
    """grpc.health.v1 `Check` against one address, reusing a single channel.

    `probe()` is True once the server reports SERVING for `service` ("" = the whole server).
    """

    def __init__(self, address: str, service: str = "") -> None:
        self._channel = grpc.insecure_channel(address)
        self._stub = health_pb2_grpc.HealthStub(self._channel)
        self._service = service

    def probe(self) -> bool:
        request = health_pb2.HealthCheckRequest(service=self._service)
        try:
            reply = self._stub.Check(request, timeout=1.0)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcHealthProbe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def http_ok(url: str) -> bool:
    """True when GET `url` answers 200 (used for Envoy's admin `/ready`)."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 (loopback URL)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m vaultpay_devstack.probes HOST:PORT [SERVICE]", file=sys.stderr)
        return 2
    with GrpcHealthProbe(*args) as health:
        return 0 if health.probe() else 1


if __name__ == "__main__":
    raise SystemExit(main())
