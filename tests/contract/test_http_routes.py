"""(b) Web-facing RPCs have an HTTP route; RPCs of internal services have none."""

from __future__ import annotations

from tests.contract.access import access_rule, is_internal_service
from vaultpay_devstack.routes import ContractMethod, http_route


def _is_internal(method: ContractMethod) -> bool:
    rule = access_rule(method.descriptor)
    return is_internal_service(method.service) or (rule is not None and rule.internal)


def test_every_web_facing_rpc_has_an_http_route(methods: list[ContractMethod]) -> None:
    unrouted = [
        m.full_name
        for m in methods
        if not _is_internal(m)
        and not m.descriptor.client_streaming
        and http_route(m.descriptor) is None
    ]
    assert not unrouted, f"RPCs web clients cannot reach (add google.api.http): {unrouted}"


def test_internal_rpcs_have_no_http_route(methods: list[ContractMethod]) -> None:
    routed = [m.full_name for m in methods if _is_internal(m) and http_route(m.descriptor)]
    assert not routed, f"internal RPCs must not be transcoded by the gateway: {routed}"


def test_http_paths_are_unique(methods: list[ContractMethod]) -> None:
    """Two RPCs on one verb and path would make the gateway pick one of them silently."""
    seen: dict[tuple[str, str], str] = {}
    clashes = []
    for m in methods:
        route = http_route(m.descriptor)
        for binding in route.bindings if route else ():
            key = (binding.verb, binding.path)
            if key in seen:
                clashes.append(f"{binding.verb} {binding.path}: {seen[key]} and {m.full_name}")
            seen.setdefault(key, m.full_name)
    assert not clashes, clashes
