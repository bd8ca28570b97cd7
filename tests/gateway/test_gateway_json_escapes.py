"""JSON string escapes in the body check (json_body.py), through a real Envoy: keys are decoded
(at most MAX_KEY_BYTES of them), values only checked, and neither costs more for its escapes
than a plain body of the same size."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.harness import (
    GatewayUnderTest,
    Reply,
    ThreadedAuthDouble,
    loopback_settings,
    start_gateway,
)
from tests.gateway.test_gateway_json import JSON, assert_gateway_error
from tests.gateway.test_gateway_json_body import assert_unknown_fields, violations
from vaultpay_gateway import BodySchemas, HostPort, json_body
from vaultpay_gateway.body_schema import ANY_VALUE, MessageRule
from vaultpay_gateway.json_body import checker_lua

REGISTER = "/v1/auth/register"
MAX_KEY_BYTES = 256  # json_body.MAX_KEY_BYTES, as documented
LONG_KEY = f"a key longer than {MAX_KEY_BYTES} bytes"


def post_register(gateway: GatewayUnderTest, body: str) -> Reply:
    return gateway.call("POST", REGISTER, body, JSON)


def test_escaped_keys_are_read_as_the_names_they_spell(
    gateway: GatewayUnderTest, auth_double: ThreadedAuthDouble
) -> None:
    calls_before = auth_double.servicer.register_calls

    passed = post_register(
        gateway, '{"\\u0065mail": "e@example.com", "pass\\u0077ord": "pw", "full\\u005Fname": "E"}'
    )
    unknown = post_register(gateway, '{"is\\u0041dmin": true, "\\ud83d\\uDE00\\n\\/": 1}')
    repeated = post_register(gateway, '{"email": "a@example.com", "\\u0065mail": "b@example.com"}')

    assert passed.status == 200, passed.body
    assert passed.json()["user"]["email"] == "e@example.com"
    assert_unknown_fields(unknown, "isAdmin", "\U0001f600\n/")
    status = assert_gateway_error(repeated, 400, 3, "DUPLICATE_FIELD")
    assert violations(status) == [{"field": "email", "description": "duplicate key"}]
    assert auth_double.servicer.register_calls == calls_before + 1


def test_escaped_values_pass_and_reach_the_service_decoded(gateway: GatewayUnderTest) -> None:
    name = '\\"q\\" \\\\ \\/ \\b\\f\\n\\r\\t \\u00E9 \\uD83D\\ude00 \\u20ac \\u005c\\u0022'
    body = (
        '{"email": "v@example.com", "password": "' + "\\/" * 500 + '", "fullName": "' + name + '"}'
    )

    reply = post_register(gateway, body)

    assert reply.status == 200, reply.body
    assert reply.json()["user"]["fullName"] == '"q" \\ / \b\f\n\r\t \u00e9 \U0001f600 \u20ac \\"'


@pytest.mark.parametrize(
    ("string", "what"),
    [
        ('"a\\xb"', "bad escape"),
        ('"a\\u12G4"', "bad \\u escape"),
        ('"a\\u00"', "bad \\u escape"),
        ('"a\\ud800b"', "a \\u escape of an unpaired surrogate"),
        ('"a\\udc00"', "a \\u escape of an unpaired surrogate"),
        ('"a\\ud800\\u0041"', "a \\u escape of an unpaired surrogate"),
        ('"a\\ud800\\uZZZZ"', "bad \\u escape"),
        ('"\\/\\/\\"', "unterminated string"),
    ],
    ids=[
        "bad escape",
        "bad hex",
        "short hex",
        "lone high surrogate",
        "lone low surrogate",
        "high surrogate then no low",
        "high surrogate then bad hex",
        "escaped closing quote",
    ],
)
@pytest.mark.parametrize("where", ["value", "key"])
def test_bad_escapes_are_refused_as_invalid_json(
    gateway: GatewayUnderTest,
    auth_double: ThreadedAuthDouble,
    string: str,
    what: str,
    where: str,
) -> None:
    """The reply names the escape's problem and the byte where its string starts."""
    calls_before = auth_double.servicer.register_calls
    body = '{"fullName": ' + string + "}" if where == "value" else "{" + string + ": 1}"
    at = body.index(string) + 1

    reply = post_register(gateway, body)

    status = assert_gateway_error(reply, 400, 3, "INVALID_REQUEST")
    assert status["message"] == f"the request body is not valid JSON: {what} at byte {at}"
    assert auth_double.servicer.register_calls == calls_before


def test_a_key_longer_than_the_cap_is_refused_naming_its_first_bytes(
    gateway: GatewayUnderTest, auth_double: ThreadedAuthDouble
) -> None:
    """Up to the cap a key is an unknown field as ever; past it (as sent or once decoded) it
    is refused without being decoded further, under a free-form value too."""
    calls_before = auth_double.servicer.register_calls
    at_cap = "k" * MAX_KEY_BYTES
    shown = "k" * 200 + "..."  # field paths are cut at 200 bytes in replies

    unknown = post_register(gateway, '{"' + at_cap + '": 1}')
    long_keys = {
        at_cap + "k": at_cap,
        "\\u006b" * (MAX_KEY_BYTES + 1): at_cap,
        # Cut inside the last character: what is left of it is shown as U+FFFD.
        at_cap[1:] + "\\u00e9": at_cap[1:] + "\ufffd",
    }
    refused = {key: post_register(gateway, '{"' + key + '": 1}') for key in long_keys}
    nested = post_register(gateway, '{"x": {"' + "k" * 1000 + '": 1}}')

    assert violations(assert_unknown_fields(unknown, shown)) == [
        {"field": shown, "description": "unknown field"}
    ]
    for key, named in long_keys.items():
        status = assert_gateway_error(refused[key], 400, 3, "INVALID_REQUEST")
        assert violations(status) == [{"field": shown, "description": LONG_KEY}]
        assert status["message"] == f"{named}: {LONG_KEY}"
    status = assert_gateway_error(nested, 400, 3, "UNKNOWN_FIELD")
    assert violations(status) == [
        {"field": "x", "description": "unknown field"},
        {"field": "x." + "k" * 198 + "...", "description": LONG_KEY},
    ]
    assert auth_double.servicer.register_calls == calls_before


def test_contract_keys_longer_than_the_cap_are_refused_at_generation() -> None:
    assert json_body.MAX_KEY_BYTES == MAX_KEY_BYTES
    fits = BodySchemas(messages={"m": MessageRule({"k" * MAX_KEY_BYTES: ANY_VALUE})}, rpcs={})
    too_long = BodySchemas(
        messages={"m": MessageRule({"k" * (MAX_KEY_BYTES + 1): ANY_VALUE})}, rpcs={}
    )

    assert f"local MAX_KEY = {MAX_KEY_BYTES}" in checker_lua(fits)
    with pytest.raises(ValueError, match="longer than"):
        checker_lua(too_long)


# --- cost: an escape-heavy body against a plain one of the same size ---

COST_BODY_BYTES = 4 * 1024 * 1024
# Every kind of escape: two-byte ones, a \u escape and a surrogate pair.
ESCAPES = '\\/\\"\\\\\\n\\u00e9\\uD83D\\uDE00'


@pytest.fixture(scope="module")
def large_body_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    descriptor_set: Path,
    auth_double: ThreadedAuthDouble,
) -> Iterator[GatewayUnderTest]:
    workdir = tmp_path_factory.mktemp("gateway-escapes")
    settings = loopback_settings(
        workdir,
        descriptor_set,
        {"auth": HostPort("127.0.0.1", auth_double.port)},
        max_request_bytes=COST_BODY_BYTES + 1024,
    )
    running = start_gateway(workdir, settings)
    try:
        yield running
    finally:
        running.stop()


def envoy_cpu_ns(gateway: GatewayUnderTest) -> int:
    """CPU time that Envoy's threads have run so far, in nanoseconds (the first field of each
    thread's schedstat): unlike wall-clock time, it does not grow while other processes of a
    busy machine run instead."""
    pid = gateway.envoy.process.pid
    total = 0
    for thread in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread that ended
            total += int(Path(f"/proc/{pid}/task/{thread}/schedstat").read_text().split()[0])
    return total


def test_an_escape_heavy_body_costs_about_what_a_plain_one_does(
    large_body_gateway: GatewayUnderTest,
) -> None:
    """The check used to decode every string, a table entry per escape: 14 MB of escapes cost
    one worker ~1 s of CPU and ~160 MiB of Lua memory. Both bodies are public GetJwks calls
    whose key `a` is unknown, so the check reads every byte of them and answers 400 itself.
    The cheapest of three tries of each is compared, interleaved (the first one warms up)."""
    size = COST_BODY_BYTES - 64
    plain = json.dumps({"a": "a" * size})
    escaped = '{"a": "' + ESCAPES * (size // len(ESCAPES)) + '"}'
    assert abs(len(plain) - len(escaped)) < len(ESCAPES) + 8

    costs: dict[str, list[int]] = {"plain": [], "escaped": []}
    for _ in range(3):
        for name, body in (("plain", plain), ("escaped", escaped)):
            before = envoy_cpu_ns(large_body_gateway)
            reply = large_body_gateway.call("GET", "/v1/auth/jwks", body, JSON)
            costs[name].append(envoy_cpu_ns(large_body_gateway) - before)
            assert_unknown_fields(reply, "a")

    plain_cost, escaped_cost = min(costs["plain"]), min(costs["escaped"])
    assert escaped_cost < 5 * plain_cost, costs
