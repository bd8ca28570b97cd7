"""A wallet stand-in for the gateway's stream tests: WatchNotifications sends the unread count
and then nothing until cancelled (an idle watch), GetBalance answers at once; both on their
own event loop thread, health checked by Envoy meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.gateway.harness import ServerThread
from vaultpay.wallet.v1 import wallet_pb2
from vaultpay_common.grpc.server import server_options

__all__ = ["ThreadedWallet"]


async def _idle_watch(
    request: wallet_pb2.WatchNotificationsRequest, context: grpc.aio.ServicerContext
) -> AsyncIterator[wallet_pb2.WatchNotificationsResponse]:
    """Sends the first message (the unread count), then nothing until cancelled."""
    yield wallet_pb2.WatchNotificationsResponse(unread_count=1)
    await asyncio.Event().wait()


async def _balance(
    request: wallet_pb2.GetBalanceRequest, context: grpc.aio.ServicerContext
) -> wallet_pb2.GetBalanceResponse:
    return wallet_pb2.GetBalanceResponse(wallet_id="w-1")


_WALLET = grpc.method_handlers_generic_handler(
    "vaultpay.wallet.v1.WalletService",
    {
        "WatchNotifications": grpc.unary_stream_rpc_method_handler(
            _idle_watch,
            request_deserializer=wallet_pb2.WatchNotificationsRequest.FromString,
            response_serializer=wallet_pb2.WatchNotificationsResponse.SerializeToString,
        ),
        "GetBalance": grpc.unary_unary_rpc_method_handler(
            _balance,
            request_deserializer=wallet_pb2.GetBalanceRequest.FromString,
            response_serializer=wallet_pb2.GetBalanceResponse.SerializeToString,
        ),
    },
)


class ThreadedWallet(ServerThread):
    """The wallet stand-in on its own loop thread; `min_ping_interval_ms` as the services'
    `server_options` take it (their default unless given)."""

    def __init__(self, *, min_ping_interval_ms: int | None = None) -> None:
        super().__init__()
        self._server, self.wallet_port = self.run(self._start_wallet(min_ping_interval_ms))

    @staticmethod
    async def _start_wallet(min_ping_interval_ms: int | None) -> tuple[grpc.aio.Server, int]:
        options = (
            server_options(1024 * 1024)
            if min_ping_interval_ms is None
            else server_options(1024 * 1024, min_ping_interval_ms=min_ping_interval_ms)
        )
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers((_WALLET,))
        checks = health.aio.HealthServicer()
        await checks.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(checks, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port
