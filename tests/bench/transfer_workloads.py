"""SendMoney as the bench's workers call it: direct gRPC to transfer, or JSON through Envoy.

Worker i always sends from the same wallet (`Accounts.sender`: the i-th by wallet id, as
pgbench's client i), which keeps the PIN rule's attempts per wallet apart; the recipient is
drawn like the pgbench prelude draws it (tests/bench/pgbench/choose.sql): the hot wallet for
`hot_percent` of the sends, else any wallet but the sender's. Amounts are 1..max_amount paise.

Every call is counted (`Tally`) whether it falls inside a measured window or not: at the end
the bench compares the sends it saw acknowledged with what the ledger holds.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from tests.bench.httpclient import HttpConnection, encode_request
from tests.bench.load import Call
from tests.bench.transfer_setup import CURRENCY, Account, Accounts
from tests.bench.workloads import PIN, WORKERS_PER_CHANNEL, Session, grpc_channel
from vaultpay.transfer.v1 import transfer_pb2, transfer_pb2_grpc
from vaultpay.type.v1 import money_pb2

__all__ = ["Draw", "GrpcSends", "HttpSends", "SendTarget", "Tally"]


@dataclass(frozen=True)
class Draw:
    """Who receives and how much, drawn like pgbench's prelude."""

    accounts: Accounts
    hot_percent: int
    max_amount: int
    rng: random.Random = field(default_factory=random.Random)
    _position: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        positions = {a.wallet_id: i for i, a in enumerate(self.accounts.all)}
        object.__setattr__(self, "_position", positions)

    def recipient(self, sender: Account) -> Account:
        wallets = self.accounts.all
        if self.rng.randint(1, 100) <= self.hot_percent:
            return wallets[-1]
        sender_at = self._position.get(sender.wallet_id)
        if sender_at is None:  # a sender from elsewhere (the production-PIN wallets)
            return wallets[self.rng.randrange(len(wallets))]
        pick = self.rng.randrange(len(wallets) - 1)
        return wallets[pick + 1 if pick >= sender_at else pick]

    def amount(self) -> int:
        return self.rng.randint(1, self.max_amount)


@dataclass
class Tally:
    """Every SendMoney the bench made, by request id: answered OK (`acknowledged`), or failed
    (which may still have committed: a timeout or UNAVAILABLE leaves the outcome unknown).
    A worker makes one call at a time and names its request id with `request_id` first."""

    acknowledged: set[str] = field(default_factory=set)
    failed_ids: set[str] = field(default_factory=set)
    _asked: dict[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return len(self.acknowledged)

    @property
    def failed(self) -> int:
        return len(self.failed_ids)

    def request_id(self, worker: int) -> str:
        """A fresh request id for `worker`'s next call."""
        self._asked[worker] = value = str(uuid.uuid4())
        return value

    def wrap(self, call: Call) -> Call:
        async def counted(worker: int) -> None:
            try:
                await call(worker)
            except BaseException:
                asked = self._asked.pop(worker, None)
                if asked is not None:  # else it failed before it sent anything
                    self.failed_ids.add(asked)
                raise
            self.acknowledged.add(self._asked.pop(worker))

        return counted


class SendTarget:
    """One path to SendMoney; `open` a session per cell."""

    path: str

    async def open(self, concurrency: int, draw: Draw, senders: Sequence[Account]) -> Session:
        raise NotImplementedError


class GrpcSends(SendTarget):
    """Direct gRPC to the transfer process(es): one channel (its own connection) per
    WORKERS_PER_CHANNEL workers, as many per address (several: a client-side split, even)."""

    path = "gRPC"

    def __init__(self, addresses: Sequence[str], tally: Tally) -> None:
        self.addresses = list(addresses)
        self.tally = tally

    async def open(self, concurrency: int, draw: Draw, senders: Sequence[Account]) -> Session:
        # A whole number of channels per address, and workers dealt to channels in turn: each
        # process gets the same share of the workers (with 2 processes and 4 clients, worker
        # // 4 put all four on the first one).
        per_address = -(-concurrency // (WORKERS_PER_CHANNEL * len(self.addresses)))
        count = max(1, per_address) * len(self.addresses)
        channels = [grpc_channel(self.addresses[i % len(self.addresses)]) for i in range(count)]
        for channel in channels:
            await channel.channel_ready()
        stubs = [transfer_pb2_grpc.TransferServiceStub(c) for c in channels]
        metadata = [s.metadata() for s in senders]

        async def send(worker: int) -> None:
            sender = senders[worker % len(senders)]
            request = transfer_pb2.SendMoneyRequest(
                request_id=self.tally.request_id(worker),
                recipient_wallet_id=draw.recipient(sender).wallet_id,
                amount=money_pb2.Money(currency_code=CURRENCY, amount_minor=draw.amount()),
                pin=PIN,
            )
            stub = stubs[worker % len(stubs)]
            await stub.SendMoney(request, metadata=metadata[worker % len(senders)])

        async def close() -> None:
            await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)

        return Session(self.tally.wrap(send), close)


class HttpSends(SendTarget):
    """POST /v1/transactions:send through Envoy, HTTP/1.1 keep-alive, a connection per worker."""

    path = "Envoy JSON"

    def __init__(self, host: str, port: int, tally: Tally) -> None:
        self.host = host
        self.port = port
        self.tally = tally
        self._authority = f"{host}:{port}"

    def request(self, sender: Account, recipient: Account, amount: int, request_id: str) -> bytes:
        body = {
            "requestId": request_id,
            "recipientWalletId": recipient.wallet_id,
            "amount": {"currencyCode": CURRENCY, "amountMinor": str(amount)},
            "pin": PIN,
        }
        return encode_request(
            "POST",
            "/v1/transactions:send",
            host=self._authority,
            headers={"Authorization": f"Bearer {sender.token}"},
            body=json.dumps(body).encode(),
        )

    async def open(self, concurrency: int, draw: Draw, senders: Sequence[Account]) -> Session:
        connections = [HttpConnection(self.host, self.port) for _ in range(concurrency)]

        async def send(worker: int) -> None:
            sender = senders[worker % len(senders)]
            raw = self.request(
                sender, draw.recipient(sender), draw.amount(), self.tally.request_id(worker)
            )
            await connections[worker].request(raw)

        async def close() -> None:
            await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)

        return Session(self.tally.wrap(send), close)


async def check_send(target: SendTarget, draw: Draw, sender: Account) -> str | None:
    """One SendMoney through `target`; what went wrong, or None."""
    session = await target.open(1, draw, [sender])
    try:
        await session.call(0)
    except Exception as exc:
        return f"{target.path} SendMoney failed: {exc}"
    finally:
        await session.close()
    return None
