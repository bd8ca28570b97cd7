"""(d) The route checker notices a removed or changed HTTP route and lets new ones pass."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from vaultpay_devstack import routes
from vaultpay_devstack.paths import PROTOS
from vaultpay_devstack.routes import Binding, Route, collect_routes, compare_routes, write_routes

BASELINE = PROTOS / "baseline" / "http_routes.json"
_SEND = "vaultpay.transfer.v1.TransferService.SendMoney"


@pytest.fixture
def current(contract: descriptor_pb2.FileDescriptorSet) -> dict[str, Route]:
    return collect_routes(contract)


@pytest.fixture
def cached_contract(
    monkeypatch: pytest.MonkeyPatch, contract: descriptor_pb2.FileDescriptorSet
) -> None:
    """Spares each --check below a protoc run; the committed-baseline test builds for real."""
    monkeypatch.setattr(routes, "load_contract", lambda: contract)


def _check(baseline: dict[str, Route], tmp_path: Path) -> int:
    target = tmp_path / "http_routes.json"
    write_routes(baseline, target)
    return routes.main(["--check", str(target)])


def test_committed_baseline_matches_the_contract() -> None:
    assert routes.main(["--check", str(BASELINE)]) == 0


@pytest.mark.usefixtures("cached_contract")
def test_changed_path_fails_and_names_the_route(
    current: dict[str, Route], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    moved = Route(dataclasses.replace(current[_SEND].primary, path="/v1/transfers:send"))
    assert _check({**current, _SEND: moved}, tmp_path) == 1
    err = capsys.readouterr().err
    assert _SEND in err
    assert "/v1/transfers:send" in err


@pytest.mark.usefixtures("cached_contract")
def test_changed_body_fails(current: dict[str, Route], tmp_path: Path) -> None:
    rebodied = Route(dataclasses.replace(current[_SEND].primary, body="amount"))
    assert _check({**current, _SEND: rebodied}, tmp_path) == 1


@pytest.mark.usefixtures("cached_contract")
def test_removed_rpc_fails(
    current: dict[str, Route], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = "vaultpay.transfer.v1.TransferService.SendMoneyTwice"
    assert _check({**current, gone: current[_SEND]}, tmp_path) == 1
    assert gone in capsys.readouterr().err


@pytest.mark.usefixtures("cached_contract")
def test_new_route_passes_and_is_reported(
    current: dict[str, Route], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    older = {name: route for name, route in current.items() if name != _SEND}
    assert _check(older, tmp_path) == 0
    assert f"info: new HTTP route {_SEND}" in capsys.readouterr().out


def test_moved_path_kept_as_additional_binding_is_not_a_break() -> None:
    old = Route(Binding("POST", "/v1/old", "*"))
    new = Route(Binding("POST", "/v1/new", "*"), (Binding("POST", "/v1/old", "*"),))
    changes = compare_routes({"pkg.Svc.Rpc": old}, {"pkg.Svc.Rpc": new})
    assert changes.broken == []
    assert changes.added == ['pkg.Svc.Rpc: POST /v1/new (body "*")']
