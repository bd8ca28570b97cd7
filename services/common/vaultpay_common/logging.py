"""JSON structured logs, one object per line, carrying the request id of the current call.

configure_logging("auth", "INFO")
log.info("user registered", extra={"user_id": user.id})
# {"ts": "...", "level": "INFO", "service": "auth", "logger": "...",
#  "msg": "user registered", "request_id": "…", "user_id": "…"}
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from vaultpay_common.context import REQUEST_ID

__all__ = ["JsonFormatter", "configure_logging"]

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# Never let these leak through `extra=`: they are secrets by name.
_REDACTED_KEYS = frozenset({"password", "pin", "token", "access_token", "refresh_token", "secret"})


class JsonFormatter(logging.Formatter):
    """Formats records as single-line JSON with the service name and request id."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id:
            payload["request_id"] = request_id
        for key, value in vars(record).items():
            if key in _STANDARD_ATTRS or key.startswith("_"):
                continue
            payload[key] = "[REDACTED]" if key in _REDACTED_KEYS else value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Routes all logging to stderr as JSON. Idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
