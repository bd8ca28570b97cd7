import json
import logging

from vaultpay_common.context import REQUEST_ID
from vaultpay_common.logging import JsonFormatter


def _format(**extra: object) -> dict[str, object]:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return dict(json.loads(JsonFormatter("auth").format(record)))


def test_log_line_is_json_with_service_and_request_id() -> None:
    token = REQUEST_ID.set("req-123")
    try:
        line = _format(user_id="u1")
    finally:
        REQUEST_ID.reset(token)
    assert line["msg"] == "hello world"
    assert line["service"] == "auth"
    assert line["request_id"] == "req-123"
    assert line["user_id"] == "u1"


def test_secret_named_fields_are_redacted() -> None:
    line = _format(password="hunter2", refresh_token="vprt_x")
    assert line["password"] == "[REDACTED]"
    assert line["refresh_token"] == "[REDACTED]"
