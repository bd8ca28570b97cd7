"""Jepsen's bank workload on a running mesh: funded wallets, concurrent senders, freezes and
faults, all recorded in a `History` for the checker.

    bank = Bank(mesh, BankConfig(seconds=30))
    await bank.open()                 # people, KYC, roomy limits, trusted address, funding
    history = await bank.run()        # clients + freezers + balance reader + nemesis
    await bank.settle(history)        # resolve unknown outcomes, replay committed sends
    ledger = await bank.read_ledger() # one snapshot of the ledger
    await bank.close()

Clients call SendMoney over native gRPC, most straight to the transfer port and every
`envoy_every`-th one through Envoy. A client gives each send one request_id. A first attempt
sometimes gets a deadline about a call's latency (the client gives up before, during or after
the commit) and sometimes goes out twice at once (a duplicate). An answer that tells nothing
(DEADLINE_EXCEEDED, UNAVAILABLE, ABORTED, ...) is retried with the same request_id and body,
sometimes after asking GetTransactionByRequestId, until a definite answer or `op_budget`
seconds; a few clients give up after the first such answer. What is still unknown after the
run is asked with GetTransactionByRequestId. The seed fixes the clients' choices, not timing:
every random choice of the run (clients, freezers, the nemesis's pauses and terminations,
retries' jitter, the replayed sample) draws from a stream derived from it (`Bank.stream`), so
VAULTPAY_BANK_TEST_SEED replays a run's choices.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tests.bank.history import (
    FULL_DEADLINE,
    INDEFINITE,
    Attempt,
    BalanceRead,
    Fault,
    FreezeEvent,
    FreezeWindow,
    History,
    LedgerRow,
    LedgerSnapshot,
    Posting,
    Send,
    verdict,
)
from tests.e2e.conftest import PASSWORD, Gateway
from tests.e2e.wallet_support import (
    bearer,
    gateway_grpc_address,
    mailed_code,
    new_person,
    rid,
    service_token,
    staff_token,
)
from tests.support import eventually
from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay.transfer.v1 import transfer_pb2, transfer_pb2_grpc
from vaultpay.type.v1 import kyc_tier_pb2, money_pb2
from vaultpay.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from vaultpay_devstack.mesh import Mesh

__all__ = ["Bank", "BankConfig"]

PIN = "2468"
CURRENCY = "INR"
CONFIRM_SUBJECT = "Confirm a new device or network"
# Our own connections to the database: the nemesis leaves them alone.
CHECKER_APPLICATION = "vaultpay-bank-checker"
# Room for any run: sends are capped per transaction by the tier (100,000 INR), far above
# what a test wallet holds, and the daily and monthly totals are lifted to the maximum.
ROOMY_SETTINGS = {  # widest first: a tier's windows must stay in order after every update
    "limits.tier_full.send.monthly": str(10**12),
    "limits.tier_full.send.daily": str(10**12),
}
# Reconnect quickly after a restart (the default backoff grows to minutes).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
# Sends a pause waits for (queued on the wallets it holds) before it stops transfer.
PAUSE_QUEUE = 3
RESTARTS = (
    "kill-transfer",
    "pause-transfer",
    "restart-redis",
    "restart-transfer",
    "freeze-race",
)
FAULTS = ("terminate-backends", *RESTARTS)


@dataclass(frozen=True)
class BankConfig:
    seconds: float  # how long the clients send
    wallets: int = 20
    clients: int = 16
    funding: int = 100_000  # each wallet's top-up, in paise
    max_amount: int = 40_000  # sends are 1..max_amount paise: some must fail for balance
    restart_every: float = 3.5  # seconds between two restarts or pauses (in RESTARTS order)
    pause_seconds: float = 3.5  # a paused transfer outlasts a client's 3 s deadline
    terminate_every: float = 1.5  # seconds between two rounds of pg_terminate_backend (about)
    freezers: int = 2  # staff freezing a wallet for a moment, again and again
    short_deadline_share: float = 0.2  # first attempts with a deadline about their latency
    duplicate_share: float = 0.05  # first attempts sent twice at once
    lookup_share: float = 0.3  # answers that tell nothing followed by GetTransactionByRequestId
    give_up_share: float = 0.05  # sends left unknown after an answer that tells nothing
    envoy_every: int = 4  # every 4th client goes through Envoy
    op_budget: float = 20.0  # seconds a client keeps retrying one send
    replay_sample: int = 200  # committed sends replayed besides every retried one
    seed: int = field(default_factory=lambda: random.SystemRandom().randrange(2**32))


@dataclass
class Account:
    email: str
    user_id: str
    wallet_id: str
    token: str
    renewing: asyncio.Lock = field(default_factory=asyncio.Lock)


def failure_of(exc: grpc.aio.AioRpcError) -> tuple[str, str]:
    """(status code name, ErrorInfo reason or "") of a failed call."""
    reason = ""
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason = info.reason
    return exc.code().name, reason


async def backoff(attempt: int, rng: random.Random) -> None:
    """The client's pause before retrying (jittered, exponential, at most a second)."""
    await asyncio.sleep(min(1.0, 0.05 * 2**attempt) * rng.uniform(0.5, 1.0))


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Waits `seconds` unless `stop` is set first; True when it was."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


class Bank:
    def __init__(self, mesh: Mesh, config: BankConfig) -> None:
        self.mesh = mesh
        self.config = config
        self.rng = random.Random(config.seed)
        self._pauses = self.stream("pause-transfer")
        self.gateway = Gateway(mesh.gateway_url)
        self.accounts: list[Account] = []
        self.staff_token = ""
        self._by_user: dict[str, Account] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._frozen: set[str] = set()
        # A wallet no client sends to, its id below some senders': the freeze race's recipient.
        self.race_recipient: Account | None = None
        self.unfunded: list[str] = []  # wallets opened, never funded (the race's among them)
        self._latencies: collections.deque[float] = collections.deque(maxlen=256)
        dbs = mesh.databases
        infra = mesh.infra
        assert dbs is not None and infra is not None
        self.admin_dsn = infra.postgres.admin_dsn
        self.ledger_dsn = dbs.url(
            dbs.vaultpay_owner_role, dbs.vaultpay_database, driver="postgresql"
        )
        self.databases = [dbs.vaultpay_database, dbs.auth_database]

    def stream(self, *part: object) -> random.Random:
        """The random choices of one part of the run (`stream("freezer", 1)`), derived from
        the run's seed: the same seed draws the same choices, whatever the timing."""
        return random.Random("/".join([str(self.config.seed), *map(str, part)]))

    # ----- set-up -------------------------------------------------------------------------

    def _channel(self, target: str) -> grpc.aio.Channel:
        if target not in self._channels:
            self._channels[target] = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        return self._channels[target]

    def _transfer(self, via: str = "direct") -> transfer_pb2_grpc.TransferServiceStub:
        target = (
            gateway_grpc_address(self.mesh)
            if via == "envoy"
            else self.mesh.grpc_address("transfer")
        )
        return transfer_pb2_grpc.TransferServiceStub(self._channel(target))

    def _wallet_channel(self) -> grpc.aio.Channel:
        return self._channel(self.mesh.grpc_address("wallet"))

    async def open(self) -> None:
        """People with wallets and PINs, KYC approved, roomy limits, their address trusted
        (the confirmation mail's token), each wallet funded by one top-up."""
        cfg = self.config
        people = await asyncio.gather(
            *(asyncio.to_thread(new_person, self.gateway, pin=PIN) for _ in range(cfg.wallets))
        )
        self.accounts = [Account(p.email, p.user_id, p.wallet_id, p.token) for p in people]
        self._by_user = {a.user_id: a for a in self.accounts}
        # The freeze race's recipient: below the fifth-highest client id, so that at least five
        # wallets can send to it with the lower id locked first. Every wallet opened on the way
        # is the test's (unfunded), so the checker accounts for it.
        fifth = sorted(a.wallet_id for a in self.accounts)[-5]
        while self.race_recipient is None or self.race_recipient.wallet_id > fifth:
            p = await asyncio.to_thread(new_person, self.gateway, pin=PIN)
            self.race_recipient = Account(p.email, p.user_id, p.wallet_id, p.token)
            self.unfunded.append(p.wallet_id)
        self.staff_token = await asyncio.to_thread(
            staff_token, self.mesh, self.gateway, "SUPER_ADMIN"
        )
        kyc = await service_token(self.mesh, "kyc", to="wallet")
        internal = wallet_pb2_grpc.WalletInternalServiceStub(self._wallet_channel())
        await asyncio.gather(
            *(
                internal.SetKycTier(
                    wallet_pb2.SetKycTierRequest(
                        request_id=rid(), user_id=a.user_id, kyc_tier=kyc_tier_pb2.KYC_TIER_FULL
                    ),
                    metadata=bearer(kyc),
                    timeout=10,
                )
                for a in self.accounts
            )
        )
        admin = wallet_pb2_grpc.WalletAdminServiceStub(self._wallet_channel())
        for key, value in ROOMY_SETTINGS.items():
            await admin.UpdateSetting(
                wallet_pb2.UpdateSettingRequest(
                    request_id=rid(), key=key, value=value, reason="bank test"
                ),
                metadata=bearer(self.staff_token),
                timeout=10,
            )
        await asyncio.gather(*(self._trust_address(i) for i in range(len(self.accounts))))
        await asyncio.gather(*(self._fund(a) for a in self.accounts))

    async def _trust_address(self, index: int) -> None:
        """The first send from an unknown address is refused and mails a token; confirm it."""
        account = self.accounts[index]
        other = self.accounts[(index + 1) % len(self.accounts)]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await self._transfer().SendMoney(
                transfer_pb2.SendMoneyRequest(
                    request_id=rid(),
                    recipient_wallet_id=other.wallet_id,
                    amount=money_pb2.Money(currency_code=CURRENCY, amount_minor=1),
                    pin=PIN,
                ),
                metadata=bearer(account.token),
                timeout=10,
            )
        assert failure_of(refused.value) == ("FAILED_PRECONDITION", "IP_NOT_TRUSTED")
        code = await asyncio.to_thread(mailed_code, self.mesh, account.email, CONFIRM_SUBJECT)
        await wallet_pb2_grpc.WalletServiceStub(self._wallet_channel()).ConfirmIp(
            wallet_pb2.ConfirmIpRequest(request_id=rid(), token=code), timeout=10
        )

    async def _fund(self, account: Account) -> None:
        await self._transfer().TopUp(
            transfer_pb2.TopUpRequest(
                request_id=rid(),
                amount=money_pb2.Money(currency_code=CURRENCY, amount_minor=self.config.funding),
                payment_method=transfer_pb2.PAYMENT_METHOD_UPI,
                payment_reference=f"bank-{uuid.uuid4().hex[:24]}",
            ),
            metadata=bearer(account.token),
            timeout=10,
        )

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels = {}

    async def _renew(self, account: Account, stale: str) -> None:
        """A fresh access token (a run longer than its 15 minutes); one login at a time."""
        async with account.renewing:
            if account.token != stale:
                return
            auth = auth_pb2_grpc.AuthServiceStub(self._channel(self.mesh.grpc_address("auth")))
            try:
                reply = await auth.Login(
                    auth_pb2.LoginRequest(email=account.email, password=PASSWORD), timeout=10
                )
            except grpc.aio.AioRpcError:
                return  # a fault: the next UNAUTHENTICATED answer brings the caller back
            account.token = reply.tokens.access_token

    # ----- the run ------------------------------------------------------------------------

    async def run(self) -> History:
        """Clients, freezers, a balance reader and the nemesis for `seconds`; then the
        clients finish the send they are on (retrying within their budget)."""
        history = History(funding={a.wallet_id: self.config.funding for a in self.accounts})
        history.funding.update(dict.fromkeys(self.unfunded, 0))
        stop = asyncio.Event()
        clients = [
            asyncio.create_task(self._client(i, history, stop), name=f"client {i}")
            for i in range(self.config.clients)
        ]
        helpers = [
            asyncio.create_task(self._freezer(i, history, stop), name=f"freezer {i}")
            for i in range(self.config.freezers)
        ]
        helpers.append(asyncio.create_task(self._reader(history, stop), name="reader"))
        helpers.append(asyncio.create_task(self._nemesis(history, stop), name="nemesis"))
        await wait_or_stop(stop, self.config.seconds)
        stop.set()
        await asyncio.gather(*clients, *helpers)
        return history

    async def _client(self, index: int, history: History, stop: asyncio.Event) -> None:
        rng = random.Random(self.config.seed * 1000 + index)
        via = (
            "envoy" if index % self.config.envoy_every == self.config.envoy_every - 1 else "direct"
        )
        while not stop.is_set():
            sender, recipient = rng.sample(self.accounts, 2)
            send = Send(
                request_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                client=index,
                sender_user=sender.user_id,
                sender=sender.wallet_id,
                recipient=recipient.wallet_id,
                amount=rng.randint(1, self.config.max_amount),
            )
            history.sends.append(send)
            await self._send(send, sender, via, rng)

    async def _send(self, send: Send, sender: Account, via: str, rng: random.Random) -> None:
        cfg = self.config
        began = time.monotonic()
        gives_up = rng.random() < cfg.give_up_share
        for n in itertools.count():
            short = n == 0 and rng.random() < cfg.short_deadline_share
            timeout = self._short_deadline(rng) if short else FULL_DEADLINE
            copies = 2 if n == 0 and rng.random() < cfg.duplicate_share else 1
            token = sender.token
            attempts = await asyncio.gather(
                *(self._attempt(send, token, timeout, via) for _ in range(copies))
            )
            send.duplicate = send.duplicate or copies == 2
            send.attempts += attempts
            self._latencies.extend(a.ended - a.started for a in attempts if a.code == "OK")
            verdicts = [verdict(a) for a in attempts]
            if "ok" in verdicts:
                send.outcome = "ok"
                send.transaction_id = next(a.transaction_id for a in attempts if a.code == "OK")
                return
            if "failed" in verdicts and "retry" not in verdicts:
                send.outcome = "failed"
                send.reason = next(a.reason or a.code for a in attempts if verdict(a) == "failed")
                return
            if gives_up or time.monotonic() - began > cfg.op_budget:
                return  # unknown: resolved after the run
            if "renew" in verdicts:
                await self._renew(sender, token)
                continue
            if rng.random() < cfg.lookup_share:
                found = await self._lookup(send, token, via)
                send.attempts.append(found)
                if found.code == "OK":
                    send.outcome = "ok"
                    send.transaction_id = found.transaction_id
                    return
            await backoff(n, rng)

    async def _lookup(self, send: Send, token: str, via: str) -> Attempt:
        """GetTransactionByRequestId: did the send commit? (NOT_FOUND: not yet, or never.)"""
        request = transfer_pb2.GetTransactionByRequestIdRequest(request_id=send.request_id)
        rpc = "GetTransactionByRequestId"
        started = time.time()
        try:
            reply = await self._transfer(via).GetTransactionByRequestId(
                request, metadata=bearer(token), timeout=FULL_DEADLINE
            )
        except grpc.aio.AioRpcError as exc:
            code, reason = failure_of(exc)
            message = exc.details() or ""
            return Attempt(
                started, time.time(), FULL_DEADLINE, code, reason, via=via, message=message, rpc=rpc
            )
        found = reply.transaction.transaction_id
        return Attempt(
            started, time.time(), FULL_DEADLINE, "OK", transaction_id=found, via=via, rpc=rpc
        )

    def _short_deadline(self, rng: random.Random) -> float:
        """Around the latency of recent sends: such a client gives up anywhere along the
        way, before the ledger call, during it, or after its commit (the reply is lost)."""
        typical = statistics.median(self._latencies) if len(self._latencies) > 10 else 0.1
        return typical * rng.uniform(0.2, 1.2)

    async def _attempt(self, send: Send, token: str, deadline: float, via: str) -> Attempt:
        request = transfer_pb2.SendMoneyRequest(
            request_id=send.request_id,
            recipient_wallet_id=send.recipient,
            amount=money_pb2.Money(currency_code=CURRENCY, amount_minor=send.amount),
            note="bank test",
            pin=PIN,
        )
        started = time.time()
        try:
            reply = await self._transfer(via).SendMoney(
                request, metadata=bearer(token), timeout=deadline
            )
        except grpc.aio.AioRpcError as exc:
            code, reason = failure_of(exc)
            return Attempt(
                started, time.time(), deadline, code, reason, via=via, message=exc.details() or ""
            )
        return Attempt(
            started,
            time.time(),
            deadline,
            "OK",
            transaction_id=reply.transaction.transaction_id,
            via=via,
        )

    async def _staff_call(
        self,
        what: str,
        method: Callable[..., Awaitable[Any]],
        request: Any,
        history: History,
        rng: random.Random,
    ) -> bool:
        """A staff RPC (the request's request_id fixed) retried until a definite answer;
        `rng` jitters the retries (the caller's stream)."""
        began = time.monotonic()
        for n in itertools.count():
            if time.monotonic() - began > 60.0:
                history.problems.append(f"{what}: no definite answer within 60 s")
                return False
            token = self.staff_token
            try:
                await method(request, metadata=bearer(token), timeout=3.0)
            except grpc.aio.AioRpcError as exc:
                code, reason = failure_of(exc)
                if code == "UNAUTHENTICATED" and token == self.staff_token:
                    await self._renew_staff()
                elif code not in INDEFINITE:
                    history.problems.append(f"{what} refused: {code} {reason}")
                    return False
            else:
                return True
            await backoff(n, rng)
        raise AssertionError("unreachable")

    async def _renew_staff(self) -> None:
        """A new staff member's token (the old one expired in a long run)."""
        # A fault may get in the way: the next UNAUTHENTICATED answer tries again.
        with contextlib.suppress(AssertionError):
            self.staff_token = await asyncio.to_thread(
                staff_token, self.mesh, self.gateway, "SUPER_ADMIN"
            )

    async def _freezer(self, index: int, history: History, stop: asyncio.Event) -> None:
        """Freezes a wallet (staff), keeps it frozen a moment while sends race it, lifts it."""
        rng = self.stream("freezer", index)
        admin = wallet_pb2_grpc.WalletAdminServiceStub(self._wallet_channel())
        while not await wait_or_stop(stop, rng.uniform(0.3, 1.5)):
            wallet = rng.choice(
                [a.wallet_id for a in self.accounts if a.wallet_id not in self._frozen]
            )
            self._frozen.add(wallet)
            freeze = wallet_pb2.AdminFreezeWalletRequest(
                request_id=rid(), wallet_id=wallet, reason="bank test: freezes racing sends"
            )
            frozen = await self._staff_call(
                f"freezing {wallet}", admin.AdminFreezeWallet, freeze, history, rng
            )
            acked = time.time()
            await wait_or_stop(stop, rng.uniform(0.5, 2.0))
            lifted = time.time()
            unfreeze = wallet_pb2.AdminUnfreezeWalletRequest(
                request_id=rid(), wallet_id=wallet, reason="bank test"
            )
            await self._staff_call(
                f"lifting the freeze of {wallet}",
                admin.AdminUnfreezeWallet,
                unfreeze,
                history,
                rng,
            )
            if frozen:
                history.freezes.append(FreezeWindow(wallet, acked, lifted))
            self._frozen.discard(wallet)

    async def _reader(self, history: History, stop: asyncio.Event) -> None:
        """Every test wallet's balance in one statement, a few times a second (Jepsen's
        reads): each must see the whole funding and nothing negative."""
        ids = list(history.funding)
        conn: Any = None
        while True:
            try:
                if conn is None or conn.is_closed():
                    conn = await self._connect(self.ledger_dsn)
                row = await conn.fetchrow(
                    "SELECT count(*) AS n, coalesce(sum(balance), 0) AS total, "
                    "min(balance) AS minimum FROM wallets WHERE id = ANY($1::text[])",
                    ids,
                )
                history.reads.append(
                    BalanceRead(time.time(), int(row["total"]), int(row["minimum"]), int(row["n"]))
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn = None
            if await wait_or_stop(stop, 0.25):
                break
        if conn is not None:
            await conn.close()

    async def _connect(self, dsn: str) -> Any:
        return await asyncpg.connect(
            dsn, timeout=10, server_settings={"application_name": CHECKER_APPLICATION}
        )

    async def _nemesis(self, history: History, stop: asyncio.Event) -> None:
        """Restarts, one every `restart_every` seconds in RESTARTS order, each awaited to its
        end (a restart returns once the process answers health again); meanwhile backends
        are terminated every `terminate_every` seconds or so."""
        restarts: dict[str, Callable[[Fault], Awaitable[None]]] = {
            "kill-transfer": lambda fault: self.restart_transfer(fault, crash=True),
            "pause-transfer": self.pause_transfer,
            "restart-redis": self.restart_redis,
            "restart-transfer": lambda fault: self.restart_transfer(fault, crash=False),
            "freeze-race": lambda fault: self.race_a_freeze(fault, history),
        }
        terminator = asyncio.create_task(self._terminator(history, stop))
        plan = itertools.cycle(RESTARTS)
        while not await wait_or_stop(stop, self.config.restart_every):
            name = next(plan)
            await self._fault(history, name, restarts[name])
        await terminator

    async def _terminator(self, history: History, stop: asyncio.Event) -> None:
        rng = self.stream("terminator")
        every = self.config.terminate_every
        while not await wait_or_stop(stop, rng.uniform(0.5 * every, 1.5 * every)):
            await self._fault(history, "terminate-backends", self.terminate_backends)

    async def _fault(
        self, history: History, name: str, action: Callable[[Fault], Awaitable[None]]
    ) -> None:
        """Injects one fault; `action` records what it did on the `Fault`."""
        fault = Fault(name, time.time(), 0.0)
        try:
            await action(fault)
        except Exception as exc:
            fault.error = repr(exc)
        fault.ended = time.time()
        history.faults.append(fault)

    async def restart_transfer(self, fault: Fault, *, crash: bool) -> None:
        fault.pid_before = self.mesh.services["transfer"].pid
        await asyncio.to_thread(self.mesh.restart_service, "transfer", crash=crash)
        fault.pid_after = self.mesh.services["transfer"].pid

    async def restart_redis(self, fault: Fault) -> None:
        fault.pid_before = self._redis_pid()
        await asyncio.to_thread(self.mesh.restart_redis)
        fault.pid_after = self._redis_pid()

    def _redis_pid(self) -> int:
        infra = self.mesh.infra
        process = None if infra is None else infra.redis.process
        return 0 if process is None else process.pid

    async def pause_transfer(self, fault: Fault) -> None:
        """Holds a few wallets' row locks until PAUSE_QUEUE sends queue on them (or 2 s pass),
        SIGSTOPs the transfer process, lets the locks go (the queued sends commit while it
        sleeps) and SIGCONTs it after the clients' deadlines passed: commits whose replies are
        lost, for certain (a GC pause or a noisy neighbour at the worst moment). Records how
        many transfer backends were queued when it stopped the process."""
        hot = self._pauses.sample([a.wallet_id for a in self.accounts], 3)
        pid = self.mesh.services["transfer"].pid
        holder = await self._connect(self.ledger_dsn)
        watcher = await self._connect(self.admin_dsn)
        stopped = False
        try:
            async with holder.transaction():
                await holder.execute(
                    "SELECT 1 FROM wallets WHERE id = ANY($1::text[]) FOR UPDATE", hot
                )
                for _ in range(100):  # up to about 2 s for a few sends to queue
                    fault.queued = int(
                        await watcher.fetchval(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE wait_event_type = 'Lock' "
                            "AND application_name = 'vaultpay-transfer'"
                        )
                    )
                    if fault.queued >= PAUSE_QUEUE:
                        break
                    await asyncio.sleep(0.02)
                os.kill(pid, signal.SIGSTOP)
                stopped = True
            await asyncio.sleep(self.config.pause_seconds)
        finally:
            if stopped:
                os.kill(pid, signal.SIGCONT)
            await holder.close()
            await watcher.close()

    async def race_a_freeze(self, fault: Fault, history: History) -> None:
        """The race the freeze rule guards, made certain: a send past its PIN check waits at the
        ledger's lock while a staff freeze of its sender commits; the ledger must refuse it.

        The ledger function locks both wallets in id order, so holding the row of a recipient
        whose id is lower than the sender's stops the send there, after the PIN check (which
        locks the sender only) and before the sender is locked. Only this send goes to that
        recipient (no client does), so the backend waiting on our lock is this send's. Then the
        freeze (which locks the sender only) commits, the lock is let go, and the send must
        answer WALLET_FROZEN. `fault.queued` is 1 when it did, after waiting at the lock; up to
        three tries, as terminated backends may cut one short. The send is in the history like
        any other (a debit committed while frozen breaks the freeze rule)."""
        recipient = self.race_recipient
        assert recipient is not None
        rng = self.stream("freeze-race", len(history.faults))

        async def free_senders() -> list[Account]:
            return [
                a
                for a in self.accounts
                if a.wallet_id > recipient.wallet_id and a.wallet_id not in self._frozen
            ]

        for _ in range(3):
            # The freezers hold a wallet for 0.5 to 2 s at a time: one is free again soon.
            sender = rng.choice(await eventually(free_senders, within=10.0, what="a free sender"))
            self._frozen.add(sender.wallet_id)  # the freezers keep off it meanwhile
            try:
                if await self._race_once(sender, recipient, history, rng):
                    fault.queued = 1
                    return
            finally:
                self._frozen.discard(sender.wallet_id)

    async def _race_once(
        self, sender: Account, recipient: Account, history: History, rng: random.Random
    ) -> bool:
        send = Send(
            request_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            client=-1,
            sender_user=sender.user_id,
            sender=sender.wallet_id,
            recipient=recipient.wallet_id,
            amount=1,
        )
        history.sends.append(send)
        admin = wallet_pb2_grpc.WalletAdminServiceStub(self._wallet_channel())
        holder: Any = None
        watcher: Any = None
        waiting = frozen = False
        acked = 0.0
        attempt: asyncio.Task[Attempt] | None = None
        try:
            holder = await self._connect(self.ledger_dsn)
            watcher = await self._connect(self.admin_dsn)
            async with holder.transaction():
                await holder.execute(
                    "SELECT 1 FROM wallets WHERE id = $1 FOR UPDATE", recipient.wallet_id
                )
                holder_pid = await holder.fetchval("SELECT pg_backend_pid()")
                attempt = asyncio.create_task(self._attempt(send, sender.token, 10.0, "direct"))
                for _ in range(150):  # up to about 3 s for the send to reach the lock
                    waiting = bool(
                        await watcher.fetchval(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE application_name = 'vaultpay-transfer' "
                            "AND $1 = ANY(pg_blocking_pids(pid))",
                            holder_pid,
                        )
                    )
                    if waiting or attempt.done():
                        break
                    await asyncio.sleep(0.02)
                if waiting:
                    freeze = wallet_pb2.AdminFreezeWalletRequest(
                        request_id=rid(),
                        wallet_id=sender.wallet_id,
                        reason="bank test: a freeze racing a send at the ledger's lock",
                    )
                    frozen = await self._staff_call(
                        f"freezing {sender.wallet_id}",
                        admin.AdminFreezeWallet,
                        freeze,
                        history,
                        rng,
                    )
                    acked = time.time()
            answered = await attempt
            send.attempts.append(answered)
            if answered.code == "OK":
                send.outcome, send.transaction_id = "ok", answered.transaction_id
            elif verdict(answered) == "failed":
                send.outcome, send.reason = "failed", answered.reason or answered.code
            return frozen and waiting and (answered.reason or answered.code) == "WALLET_FROZEN"
        finally:
            if attempt is not None and not attempt.done():
                attempt.cancel()
            for conn in (holder, watcher):
                if conn is not None:
                    await conn.close()
            # Lifted whenever it was asked for: an attempt that timed out may have committed it.
            if waiting:
                lifted = time.time()
                unfreeze = wallet_pb2.AdminUnfreezeWalletRequest(
                    request_id=rid(), wallet_id=sender.wallet_id, reason="bank test"
                )
                await self._staff_call(
                    f"lifting the freeze of {sender.wallet_id}",
                    admin.AdminUnfreezeWallet,
                    unfreeze,
                    history,
                    rng,
                )
                if frozen:
                    history.freezes.append(FreezeWindow(sender.wallet_id, acked, lifted))

    async def terminate_backends(self, fault: Fault) -> None:
        """pg_terminate_backend on every connection of the mesh's databases but ours; records
        how many it ended, how many of them were transfer's, and how many of those were not
        idle (a pooled idle connection's end is replaced unseen; a busy one's cuts a hold or
        a ledger call short)."""
        conn = await self._connect(self.admin_dsn)
        try:
            row = await conn.fetchrow(
                "SELECT count(*) FILTER (WHERE ended) AS killed, "
                "count(*) FILTER (WHERE ended AND application_name = 'vaultpay-transfer') "
                "AS transfer, "
                "count(*) FILTER (WHERE ended AND application_name = 'vaultpay-transfer' "
                "AND state <> 'idle') AS busy FROM ("
                "  SELECT application_name, state, pg_terminate_backend(pid) AS ended "
                "  FROM pg_stat_activity "
                "  WHERE datname = ANY($1::text[]) AND pid <> pg_backend_pid() "
                "  AND coalesce(application_name, '') <> $2"
                ") AS t",
                self.databases,
                CHECKER_APPLICATION,
            )
        finally:
            await conn.close()
        fault.killed, fault.killed_transfer = int(row["killed"]), int(row["transfer"])
        fault.killed_transfer_busy = int(row["busy"])

    # ----- after the run --------------------------------------------------------------------

    async def settle(self, history: History) -> None:
        """Asks the service what became of every unknown send, and sends again every retried
        or unknown send that moved money plus a sample of the others: the replay must answer
        the same transaction."""
        unknown = [s for s in history.sends if s.outcome == "unknown"]
        await self._bounded(self._resolve, unknown)
        committed = [s for s in history.sends if s.committed_id]
        eventful = [s for s in committed if len(s.attempts) > 1 or s.outcome == "unknown"]
        plain = [s for s in committed if s not in eventful]
        sample = self.rng.sample(plain, min(len(plain), self.config.replay_sample))
        await self._bounded(self._replay, eventful + sample)

    async def _bounded(self, work: Callable[[Send], Awaitable[None]], sends: list[Send]) -> None:
        queue = list(sends)

        async def worker() -> None:
            while queue:
                await work(queue.pop())

        await asyncio.gather(*(worker() for _ in range(self.config.clients)))

    async def _ask(self, send: Send, call: Callable[[str], Awaitable[Any]]) -> Any | str | None:
        """`call(token)` with retries: its reply, the reason of a definite failure, or None."""
        account = self._by_user[send.sender_user]
        rng = self.stream("ask", send.request_id)
        began = time.monotonic()
        for n in itertools.count():
            if time.monotonic() - began > 30.0:
                return None
            token = account.token
            try:
                return await call(token)
            except grpc.aio.AioRpcError as exc:
                code, reason = failure_of(exc)
                if code == "UNAUTHENTICATED":
                    await self._renew(account, token)
                elif code not in INDEFINITE:
                    return reason or code
            await backoff(n, rng)
        raise AssertionError("unreachable")

    async def _resolve(self, send: Send) -> None:
        request = transfer_pb2.GetTransactionByRequestIdRequest(request_id=send.request_id)
        answer = await self._ask(
            send,
            lambda token: self._transfer().GetTransactionByRequestId(
                request, metadata=bearer(token), timeout=3.0
            ),
        )
        if isinstance(answer, transfer_pb2.GetTransactionByRequestIdResponse):
            send.resolved = answer.transaction.transaction_id
        elif answer in ("NOT_FOUND", "TRANSACTION_NOT_FOUND"):
            send.resolved = ""

    async def _replay(self, send: Send) -> None:
        answer = await self._ask(
            send,
            lambda token: self._attempt_reply(send, token),
        )
        if isinstance(answer, transfer_pb2.SendMoneyResponse):
            send.replayed = answer.transaction.transaction_id
        else:
            send.replayed = ""

    async def _attempt_reply(self, send: Send, token: str) -> transfer_pb2.SendMoneyResponse:
        request = transfer_pb2.SendMoneyRequest(
            request_id=send.request_id,
            recipient_wallet_id=send.recipient,
            amount=money_pb2.Money(currency_code=CURRENCY, amount_minor=send.amount),
            note="bank test",
            pin=PIN,
        )
        reply: transfer_pb2.SendMoneyResponse = await self._transfer().SendMoney(
            request, metadata=bearer(token), timeout=3.0
        )
        return reply

    async def read_ledger(self) -> LedgerSnapshot:
        """The ledger in one snapshot, with each side's and each freeze's commit time, and
        the offset of the database's clock from ours."""
        conn = await self._connect(self.ledger_dsn)
        try:
            before = time.time()
            db_now = float(await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())"))
            after = time.time()
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                balances = await conn.fetch("SELECT id, balance FROM wallets")
                kinds = await conn.fetch("SELECT id::text AS id, kind FROM ledger_transactions")
                # The commit time of the movement's ledger_transactions row: insert-only,
                # unlike wallet_transactions (a status change would move its xmin).
                rows = await conn.fetch(
                    "SELECT w.id::text AS id, w.ledger_transaction_id::text AS movement, "
                    "w.request_id::text AS request_id, w.user_id, w.wallet_id, w.type, "
                    "w.category, w.status, w.amount, w.balance_after, w.counterparty_wallet_id, "
                    "extract(epoch FROM w.created_at)::float8 AS created_at, "
                    "extract(epoch FROM pg_xact_commit_timestamp(m.xmin))::float8 AS committed_at "
                    "FROM wallet_transactions w "
                    "JOIN ledger_transactions m ON m.id = w.ledger_transaction_id"
                )
                postings = await conn.fetch(
                    "SELECT id, ledger_transaction_id::text AS movement, account, amount "
                    "FROM ledger_postings"
                )
                lockouts = await conn.fetch(
                    "SELECT target_id FROM audit_events WHERE action = 'wallet.pin_locked'"
                )
                # Audit rows are never updated: xmin is the freezing transaction's.
                freezes = await conn.fetch(
                    "SELECT target_id, action, sequence, "
                    "extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 AS committed_at "
                    "FROM audit_events WHERE action IN ('wallet.frozen', 'wallet.unfrozen')"
                )
        finally:
            await conn.close()
        return LedgerSnapshot(
            balances={r["id"]: int(r["balance"]) for r in balances},
            kinds={r["id"]: r["kind"] for r in kinds},
            rows=[
                LedgerRow(
                    r["id"],
                    r["movement"],
                    r["request_id"],
                    r["user_id"],
                    r["wallet_id"],
                    r["type"],
                    r["category"],
                    r["status"],
                    int(r["amount"]),
                    int(r["balance_after"]),
                    r["counterparty_wallet_id"],
                    float(r["created_at"]),
                    _seconds(r["committed_at"]),
                )
                for r in rows
            ],
            postings=[
                Posting(int(p["id"]), p["movement"], p["account"], int(p["amount"]))
                for p in postings
            ],
            lockouts=[r["target_id"] for r in lockouts],
            freeze_events=[
                FreezeEvent(
                    r["target_id"],
                    "frozen" if r["action"] == "wallet.frozen" else "unfrozen",
                    _seconds(r["committed_at"]),
                    int(r["sequence"]),
                )
                for r in freezes
            ],
            clock_offset=db_now - (before + after) / 2,
            clock_error=(after - before) / 2,
        )

    async def tracks_commit_times(self) -> bool:
        """Whether the database records commit times (the freeze rule needs them)."""
        conn = await self._connect(self.ledger_dsn)
        try:
            return bool(
                await conn.fetchval("SELECT current_setting('track_commit_timestamp') = 'on'")
            )
        finally:
            await conn.close()

    def verify_ledger(self) -> subprocess.CompletedProcess[str]:
        """`vaultpay-transfer verify-ledger`, as an operator runs it (exit 0 when clean)."""
        return subprocess.run(
            [str(Path(sys.executable).parent / "vaultpay-transfer"), "verify-ledger"],
            env={**os.environ, **self.mesh.env_for("transfer")},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def _seconds(value: float | None) -> float | None:
    return None if value is None else float(value)
