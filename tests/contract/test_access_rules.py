"""(a) Every RPC declares exactly one access rule: the interceptor denies RPCs without one."""

from __future__ import annotations

from tests.contract.access import access_rule, is_internal_service
from vaultpay_devstack.routes import ContractMethod


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
