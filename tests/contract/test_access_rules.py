"""(a) Every RPC declares exactly one access rule: the interceptor denies RPCs without one."""

from __future__ import annotations

from tests.contract.access import access_rule, is_internal_service
from vaultpay_devstack.routes import ContractMethod
from vaultpay_devstack.services import SERVICE_CLIENTS


def test_every_rpc_has_an_access_rule(methods: list[ContractMethod]) -> None:
    missing = [m.full_name for m in methods if access_rule(m.descriptor) is None]
    assert not missing, f"RPCs without (vaultpay.authz.v1.rule), denied to everyone: {missing}"


def test_every_access_rule_has_exactly_one_meaning(methods: list[ContractMethod]) -> None:
    ambiguous = [
        f"{m.full_name}: {rule}"
        for m in methods
        if (rule := access_rule(m.descriptor)) is not None and rule.meanings != 1
    ]
    assert not ambiguous, f"set exactly one of public, internal, min_role: {ambiguous}"


def test_strict_is_only_set_on_rules_for_human_roles(methods: list[ContractMethod]) -> None:
    """Strict asks auth whether a user's token is live; public and service calls have none."""
    misplaced = [
        m.full_name
        for m in methods
        if (rule := access_rule(m.descriptor)) is not None
        and rule.strict
        and rule.min_role == "ROLE_UNSPECIFIED"
    ]
    assert not misplaced, f"strict without min_role: {misplaced}"


def test_internal_rpcs_live_in_internal_services(methods: list[ContractMethod]) -> None:
    """The gateway hides whole `*InternalService`s, so an internal RPC elsewhere would leak."""
    stray = [
        m.full_name
        for m in methods
        if (rule := access_rule(m.descriptor)) is not None
        and rule.internal
        and not is_internal_service(m.service)
    ]
    assert not stray, f"internal RPCs outside an *InternalService: {stray}"


def test_every_internal_rpc_names_known_calling_services(methods: list[ContractMethod]) -> None:
    """Deny by default between services: an internal rule names the services that call it (the
    interceptor refuses to load one that names none), each a service identity auth issues tokens
    to (the devstack's SERVICE_CLIENTS) other than the service itself, none twice, and only
    internal rules name callers."""
    known = set(SERVICE_CLIENTS)
    wrong = []
    for m in methods:
        rule = access_rule(m.descriptor)
        if rule is None:
            continue
        if not rule.internal:
            if rule.callers:
                wrong.append(f"{m.full_name}: callers without internal {rule.callers}")
            continue
        if not rule.callers:
            wrong.append(f"{m.full_name}: internal without callers")
        if unknown := sorted(set(rule.callers) - known):
            wrong.append(f"{m.full_name}: unknown services {unknown}")
        if len(set(rule.callers)) != len(rule.callers):
            wrong.append(f"{m.full_name}: a caller named twice {rule.callers}")
        if (owner := m.package.split(".")[1]) in rule.callers:
            wrong.append(f"{m.full_name}: {owner} names itself as a caller")
    assert not wrong, wrong
