"""The transfer bench's options, draws, Envoy endpoints and timing, without a mesh."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from tests.bench.harness import MAX_SLOW_WINDOW, PRODUCTION_PIN_ROUNDS, slow_window
from tests.bench.transfer import (
    add_endpoint,
    cell_count,
    format_statements,
    healthy_endpoints,
    parse_args,
    per_request,
)
from tests.bench.transfer_setup import Account, Accounts, limit_settings, user_id_of
from tests.bench.transfer_workloads import Draw, HttpSends, Tally
from tests.bench.workloads import PIN, UserPool


def accounts(count: int, prefix: str = "VPY-") -> Accounts:
    pool = UserPool(
        "127.0.0.1:1",
        [f"u{i}@example.com" for i in range(count)],
        tokens=[f"token-{i}" for i in range(count)],
        wallet_ids=[f"{prefix}{i:06d}" for i in range(count)],
    )
    found = [Account(pool, i, f"user-{i}", pool.wallet_ids[i]) for i in range(count)]
    return Accounts(tuple(found))


def test_defaults_mirror_the_other_bench() -> None:
    full = parse_args([])
    assert full.concurrency == (8, 32, 64) and full.wallets == 65
    assert full.sections == ("uniform", "hot", "pin", "two")
    assert full.production_pin_rounds == PRODUCTION_PIN_ROUNDS and full.pin_bcrypt_rounds == 4
    quick = parse_args(["--quick"])
    assert quick.quick and quick.concurrency == (2, 4) and quick.seconds == 0.5
    assert parse_args(["--quick", "--concurrency", "16"]).concurrency == (16,)
    assert parse_args(["--sections", "hot,two", "--paths", "grpc"]).sections == ("hot", "two")


def test_a_shared_bench_args_works_for_both_benches() -> None:
    # run.py's --pin-bcrypt-rounds is the production-PIN cells' cost here too; its own
    # options are ignored (and told), not refused.
    opts = parse_args(["--pin-bcrypt-rounds", "10", "--workloads", "getbalance", "--users", "8"])
    assert (opts.production_pin_rounds, opts.pin_bcrypt_rounds) == (10, 4)
    assert opts.ignored == ("--workloads", "getbalance", "--users", "8")
    assert parse_args(["--ledger-pin-rounds", "5"]).pin_bcrypt_rounds == 5


@pytest.mark.parametrize(
    "argv", [["--hot-percent", "101"], ["--pin-workers", "0"], ["--seconds", "0"]]
)
def test_nonsense_is_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_cells_are_counted_for_the_progress_line() -> None:
    opts = parse_args(["--concurrency", "8,32", "--paths", "grpc,http"])
    # uniform and hot: 2 pgbench + 2 paths per level; pin: one per path; two: 2 per path.
    assert cell_count(opts) == 2 * (4 * 2) + 2 + 4


def test_the_pin_window_waits_for_enough_completions() -> None:
    opts = parse_args([])
    assert slow_window(opts, 8.0) == 12.5  # 100 completions at 8/s
    assert slow_window(opts, 1.0) == MAX_SLOW_WINDOW
    assert slow_window(parse_args(["--quick"]), 8.0) == 0.5


def test_a_send_never_goes_to_its_sender_and_the_hot_share_holds() -> None:
    wallets = accounts(9)
    hot = wallets.all[-1]
    uniform = Draw(wallets, 0, 100, random.Random(7))
    skewed = Draw(wallets, 50, 100, random.Random(7))
    sender = wallets.sender(3)
    picks = Counter(uniform.recipient(sender).wallet_id for _ in range(4000))
    assert sender.wallet_id not in picks and len(picks) == 8
    hot_share = sum(skewed.recipient(sender) is hot for _ in range(4000)) / 4000
    assert 0.5 < hot_share < 0.62  # half, plus the hot wallet's share of the other half
    assert all(1 <= uniform.amount() <= 100 for _ in range(200))


def test_senders_never_include_the_hot_wallet() -> None:
    wallets = accounts(5)
    assert {wallets.sender(i).wallet_id for i in range(40)} == set(wallets.wallet_ids[:-1])


def test_a_sender_from_elsewhere_sends_to_any_bench_wallet() -> None:
    wallets, others = accounts(4), accounts(2, prefix="VPY-Z")
    draw = Draw(wallets, 0, 10, random.Random(1))
    picks = {draw.recipient(others.all[0]).wallet_id for _ in range(400)}
    assert picks == set(wallets.wallet_ids)


async def test_the_tally_keeps_every_calls_request_id_by_its_answer() -> None:
    tally = Tally()
    named: list[str] = []

    async def fine(worker: int) -> None:
        named.append(tally.request_id(worker))

    async def broken(worker: int) -> None:
        named.append(tally.request_id(worker))
        raise TimeoutError

    async def before_sending(worker: int) -> None:
        raise ValueError("no request made")

    await tally.wrap(fine)(0)
    with pytest.raises(TimeoutError):
        await tally.wrap(broken)(1)
    with pytest.raises(ValueError, match="no request made"):
        await tally.wrap(before_sending)(2)
    assert (tally.acknowledged, tally.failed_ids) == ({named[0]}, {named[1]})
    assert (tally.ok, tally.failed) == (1, 1)


def test_the_json_send_carries_the_pin_and_the_senders_token() -> None:
    wallets = accounts(3)
    raw = HttpSends("127.0.0.1", 8080, Tally()).request(
        wallets.all[0], wallets.all[1], 42, "0b7c8f52-6a1c-4d7e-9a51-3f7e2f0c9d11"
    )
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /v1/transactions:send HTTP/1.1")
    assert b"Authorization: Bearer token-0" in head
    sent = json.loads(body)
    assert sent["pin"] == PIN and sent["recipientWalletId"] == wallets.all[1].wallet_id
    assert sent["amount"] == {"currencyCode": "INR", "amountMinor": "42"}
    assert sent["requestId"] == "0b7c8f52-6a1c-4d7e-9a51-3f7e2f0c9d11"


def test_a_second_endpoint_joins_the_transfer_cluster(tmp_path: Path) -> None:
    config = tmp_path / "envoy.json"
    address = {"socket_address": {"address": "127.0.0.1", "port_value": 1}}
    cluster = {
        "name": "transfer",
        "load_assignment": {"endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}]},
    }
    config.write_text(json.dumps({"static_resources": {"clusters": [cluster]}}))
    add_endpoint(config, "transfer", "127.0.0.1", 2)
    endpoints = json.loads(config.read_text())["static_resources"]["clusters"][0][
        "load_assignment"
    ]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["port_value"] for e in endpoints] == [1, 2]
    with pytest.raises(RuntimeError, match="no single cluster"):
        add_endpoint(config, "wallet", "127.0.0.1", 3)


def test_envoy_health_flags_are_read_per_endpoint() -> None:
    text = "\n".join(
        [
            "transfer::127.0.0.1:1::cx_active::4",
            "transfer::127.0.0.1:1::health_flags::healthy",
            "transfer::127.0.0.1:2::health_flags::/failed_active_hc",
            "wallet::127.0.0.1:3::health_flags::healthy",
        ]
    )
    assert healthy_endpoints(text, "transfer") == ["127.0.0.1:1"]


def test_the_limits_raised_are_the_full_tiers_send_and_top_up() -> None:
    keys = limit_settings()
    assert len(keys) == 6
    assert "limits.tier_full.send.daily" in keys and "limits.tier_full.top_up.monthly" in keys
    # Raised widest first, so every update keeps per transaction <= daily <= monthly.
    assert keys.index("limits.tier_full.send.monthly") < keys.index("limits.tier_full.send.daily")
    assert keys.index("limits.tier_full.send.daily") < keys.index(
        "limits.tier_full.send.per_transaction"
    )


def test_a_tokens_subject_is_its_user() -> None:
    token = "e30.eyJzdWIiOiJ1c2VyLTEifQ.sig"  # {"sub":"user-1"}
    assert user_id_of(token) == "user-1"


def test_pg_statements_are_off_unless_asked_and_read_per_send() -> None:
    assert not parse_args([]).pg_statements
    assert parse_args(["--pg-statements"]).pg_statements
    top = [
        {"calls": 400, "total_exec_time": 900.0, "rows": 400, "query": "SELECT  a\n FROM f($1)"},
        {"calls": 0, "total_exec_time": 0.0, "rows": 0, "query": "SELECT 1"},
    ]
    figures = per_request(top, 200)
    assert figures[0] == {
        "calls_per_request": 2.0,
        "ms_per_request": 4.5,
        "ms_per_call": 2.25,
        "calls": 400,
        "rows": 400,
        "query": "SELECT a FROM f($1)",
    }
    assert figures[1]["ms_per_call"] == 0.0  # no division by zero
    assert per_request(top, 0)[0]["ms_per_request"] == 900.0
    shown = format_statements(figures).splitlines()
    assert len(shown) == 3 and "4.500" in shown[1] and "SELECT a FROM f($1)" in shown[1]


@pytest.mark.parametrize("clients", [1, 2, 4, 8, 12, 32, 64])
async def test_direct_grpc_gives_each_transfer_process_the_same_share_of_workers(
    clients: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With two processes and 4 clients, `worker // 4` sent everything to the first (a review
    of the bench: the two-process gRPC cell measured one process twice)."""
    from tests.bench import transfer_workloads
    from vaultpay.transfer.v1 import transfer_pb2_grpc

    opened: list[str] = []

    class _Channel:
        def __init__(self, address: str) -> None:
            self.address = address
            opened.append(address)

        async def channel_ready(self) -> None:
            return None

    used: list[str] = []

    class _Stub:
        def __init__(self, channel: _Channel) -> None:
            self.channel = channel

        async def SendMoney(self, request: object, metadata: object) -> None:
            used.append(self.channel.address)

    monkeypatch.setattr(transfer_workloads, "grpc_channel", _Channel)
    monkeypatch.setattr(transfer_pb2_grpc, "TransferServiceStub", _Stub)
    wallets = accounts(max(2, clients))
    sends = transfer_workloads.GrpcSends(["a:1", "b:2"], Tally())
    session = await sends.open(clients, Draw(wallets, 0, 10, random.Random(1)), wallets.all)
    for worker in range(clients):
        await session.call(worker)
    assert opened.count("a:1") == opened.count("b:2")
    assert abs(used.count("a:1") - used.count("b:2")) <= clients % 2
