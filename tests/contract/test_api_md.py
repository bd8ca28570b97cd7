"""(c) The contract serves exactly the routes and access rules shared/API.md promises.

API.md is normative for web clients, so a drift on either side is a bug: the contract
moved a path or loosened a rule, or the document gained an RPC nobody built.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from tests.contract.access import access_rule, is_internal_service
from tests.contract.api_md import API_MD, ApiRow, parse_api_md
from vaultpay_devstack.routes import ContractMethod, http_route

_Index = dict[tuple[str, str], list[ContractMethod]]


@pytest.fixture(scope="module")
def api_rows() -> list[ApiRow]:
    assert API_MD.is_file(), (
        f"{API_MD} not found: shared/ (with API.md) must sit beside the checkout, as CI has it"
    )
    rows = parse_api_md()
    assert rows, f"no RPC rows found in {API_MD}"
    return rows


@pytest.fixture(scope="module")
def index(methods: list[ContractMethod]) -> _Index:
    by_name: _Index = defaultdict(list)
    for m in methods:
        by_name[(m.package, m.name)].append(m)
    return by_name


def _documented(rows: list[ApiRow], index: _Index) -> list[tuple[ApiRow, ContractMethod]]:
    """Rows paired with their RPC; rows whose name is left to us may have no match."""
    return [
        (row, index[(row.package, row.rpc)][0]) for row in rows if index[(row.package, row.rpc)]
    ]


def test_every_documented_rpc_exists_once(api_rows: list[ApiRow], index: _Index) -> None:
    problems = [
        f"{row.label}: {len(index[(row.package, row.rpc)])} RPCs of that name"
        for row in api_rows
        if len(index[(row.package, row.rpc)]) != 1
        and not (row.name_is_ours and not index[(row.package, row.rpc)])
    ]
    assert not problems, problems


def test_documented_routes_match_the_contract(api_rows: list[ApiRow], index: _Index) -> None:
    problems = []
    for row, method in _documented(api_rows, index):
        route = http_route(method.descriptor)
        if row.verb is None:
            if route is not None:
                problems.append(f"{row.label}: API.md has no route, contract has {route.primary}")
        elif route is None:
            problems.append(f"{row.label}: API.md says {row.verb} {row.path}, contract has none")
        elif (route.primary.verb, route.primary.path) != (row.verb, row.path):
            problems.append(
                f"{row.label}: API.md says {row.verb} {row.path}, contract {route.primary}"
            )
    assert not problems, "\n".join(problems)


def test_documented_access_rules_match_the_contract(api_rows: list[ApiRow], index: _Index) -> None:
    problems = [
        f"{row.label}: API.md says {row.access}, contract has {rule}"
        for row, method in _documented(api_rows, index)
        if (rule := access_rule(method.descriptor)) != row.access
    ]
    assert not problems, "\n".join(problems)


def test_rpcs_left_for_us_to_name_exist_as_internal_rpcs(
    api_rows: list[ApiRow], index: _Index, methods: list[ContractMethod]
) -> None:
    """A "(name yours)" row with no RPC of that name needs some other internal RPC."""
    documented = {(row.package, row.rpc) for row in api_rows}
    problems = []
    for package in sorted({row.package for row in api_rows}):
        unmatched = [
            row.rpc
            for row in api_rows
            if row.package == package and row.name_is_ours and not index[(package, row.rpc)]
        ]
        spare_internal = [
            m.name
            for m in methods
            if m.package == package
            and (m.package, m.name) not in documented
            and (rule := access_rule(m.descriptor)) is not None
            and rule.internal
        ]
        if len(spare_internal) < len(unmatched):
            problems.append(f"{package}: {unmatched} have no internal RPC (found {spare_internal})")
    assert not problems, problems


def test_every_web_facing_rpc_is_documented(
    api_rows: list[ApiRow], methods: list[ContractMethod]
) -> None:
    """An RPC reachable through the gateway but missing from API.md is an undocumented API."""
    documented = {(row.package, row.rpc) for row in api_rows}
    undocumented = [
        m.full_name
        for m in methods
        if not is_internal_service(m.service) and (m.package, m.name) not in documented
    ]
    assert not undocumented, f"add these to API.md or make them internal: {undocumented}"
