"""The bank test: Jepsen's bank workload ported to VaultPay, with faults injected mid-run.

20 funded wallets, 16 concurrent clients sending random amounts between them over native gRPC
(most straight to the transfer port, a quarter through Envoy), clients that time out and
retry with the same request_id or ask GetTransactionByRequestId, staff freezes racing the
sends, PostgreSQL backends terminated every second or two, and every few seconds the transfer
service killed (SIGKILL), paused (SIGSTOP) past the clients' deadlines or restarted (SIGTERM),
or Redis restarted. Then tests/bank/checker.py holds the history against the ledger
(conservation, no negative balance, every acknowledged send exactly once, no phantom, replays,
no debit committed while its wallet was frozen), `vaultpay-transfer verify-ledger` must be
clean, and the run must show it did what it claims (`unexercised`: enough SendMoney calls,
retries answered after retryable failures, duplicates, lost replies, refusals inside freeze
windows, backends terminated, new transfer and Redis processes, calls hit by every fault).

It runs on a mesh of its own (auth, wallet, transfer, Envoy; its own Redis and its own
PostgreSQL, started with track_commit_timestamp=on for the freeze rule), since it restarts
processes. Longer runs: VAULTPAY_BANK_TEST_SECONDS=600 (how long the clients send; default
45), and VAULTPAY_BANK_TEST_SEED to replay the clients' choices of a run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bank.checker import (
    check,
    freeze_windows,
    frozen_refusals_in_windows,
    lost_replies,
    summary,
    unexercised,
)
from tests.bank.history import History, LedgerSnapshot
from tests.bank.workload import FAULTS, Bank, BankConfig
from vaultpay_devstack.infra import scratch_dir
from vaultpay_devstack.mesh import Mesh, MeshConfig
from vaultpay_devstack.postgres import unique_suffix

pytestmark = pytest.mark.e2e

SECONDS_ENV = "VAULTPAY_BANK_TEST_SECONDS"
SEED_ENV = "VAULTPAY_BANK_TEST_SEED"
DEFAULT_SECONDS = 45.0
# The freeze rule orders debits and freezes by their commit times (a server-start setting).
COMMIT_TIMES = ("track_commit_timestamp=on",)


def bank_config() -> BankConfig:
    seconds = float(os.environ.get(SECONDS_ENV) or DEFAULT_SECONDS)
    seed = os.environ.get(SEED_ENV)
    if seed:
        return BankConfig(seconds=seconds, seed=int(seed))
    return BankConfig(seconds=seconds)


class BankMesh(Mesh):
    """The mesh with transfer's per-user movement guard off: 16 clients over 20 wallets send
    as fast as they can (some 10 movements a second from one wallet), and the test is about
    the ledger under faults, not about RATE_LIMITED answers (which its clients would retry)."""

    def env_for(self, service: str, *, operator: bool = False) -> dict[str, str]:
        env = super().env_for(service, operator=operator)
        if service == "transfer":
            env["TRANSFER_MOVEMENT_RATE_PER_SECOND"] = "0"
        return env


@pytest.fixture(scope="module")
def bank_mesh() -> Iterator[Mesh]:
    """auth, wallet, transfer and Envoy (no rate limit in the way of 16 clients from one
    address), with a private Redis the test restarts and a private PostgreSQL that records
    commit times, or the server VAULTPAY_POSTGRES_ADMIN_URL names (which must record them:
    the test fails otherwise)."""
    var_dir = scratch_dir("vaultpay-bank-")
    external = MeshConfig.from_env(profile="test").postgres_admin_url
    config = MeshConfig.for_tests(
        var_dir,
        postgres_admin_url=external,
        postgres_settings=() if external else COMMIT_TIMES,
        database_suffix=unique_suffix("bank"),
        drop_databases_on_stop=True,
        services=("auth", "wallet", "transfer"),
        gateway_rate_limit="100000/100000",
    )
    try:
        with BankMesh(config) as running:
            yield running
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)


def _keep(path: Path, history: History, ledger: LedgerSnapshot, seed: int) -> None:
    """The run's history and ledger as JSON, to study a failure."""
    data = {
        "seed": seed,
        "history": dataclasses.asdict(history),
        "ledger": dataclasses.asdict(ledger),
    }
    path.write_text(json.dumps(data, indent=1))


@pytest.mark.time_limit(bank_config().seconds + 240)  # the mesh's start, the run, the checks
async def test_the_bank_loses_and_invents_no_money_through_faults(
    bank_mesh: Mesh, tmp_path: Path
) -> None:
    config = bank_config()
    # First, so that any failure (an exception in the run included) shows how to replay it.
    print(f"bank test seed {config.seed}: replay its choices with {SEED_ENV}={config.seed}")
    bank = Bank(bank_mesh, config)
    try:
        assert await bank.tracks_commit_times(), (
            "the bank test needs track_commit_timestamp=on on its PostgreSQL"
        )
        await bank.open()
        history = await bank.run()
        await bank.settle(history)
        ledger = await bank.read_ledger()
    finally:
        await bank.close()
        shutil.copytree(bank_mesh.log_dir, tmp_path / "logs")  # the mesh's go with it
    kept = tmp_path / "bank-history.json"
    _keep(kept, history, ledger, config.seed)
    report = (
        f"seed {config.seed}: {summary(history)}; replies lost after a commit "
        f"{lost_replies(history, ledger)}; freeze windows in the database "
        f"{sum(len(w) for w in freeze_windows(ledger).values())}, WALLET_FROZEN refusals "
        f"inside them {frozen_refusals_in_windows(history, ledger)}; database clock "
        f"{ledger.clock_offset:+.4f} s (+-{ledger.clock_error:.4f}) from ours "
        f"(history in {kept}, logs next to it)"
    )
    print(report)

    problems = check(history, ledger)
    assert not problems, "\n".join([report, *problems])
    verified = bank.verify_ledger()
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # The run exercised what it claims to (a checker never fails on a run that did nothing).
    gaps = unexercised(
        history,
        ledger,
        seconds=config.seconds,
        fault_names=FAULTS,
        replay_sample=config.replay_sample,
    )
    assert not gaps, "\n".join([report, *gaps])
