"""Replies Envoy makes itself, shaped like the services' own errors.

Envoy's own replies (no route, bad JSON, JWT failure, rate limit, body too large, upstream
down) are `text/plain` by default (GATEWAY.md item 6). The mappers built here turn them into
the shape every VaultPay error has:

- JSON clients get the HTTP status plus a `google.rpc.Status` body with an `ErrorInfo`
  (`domain: vaultpay.gateway`, a stable `reason`), content type `application/json`.
- Native gRPC clients get a trailers-only reply whose `grpc-status` is set explicitly (Envoy's
  HTTP->gRPC default maps 413 to UNKNOWN and 429 to UNAVAILABLE), a fixed `grpc-message` and
  `grpc-status-details-bin`: the same `google.rpc.Status` with the same `ErrorInfo` a JSON
  client gets (plus a `google.rpc.RetryInfo` where the JSON reply says `Retry-After`), so a
  gRPC client can tell "refresh your token" from "bad token" too. A mapper can only add fixed
  headers, so each Status is serialised here, at config time, with a fixed message (gRPC
  clients such as grpcio's `rpc_status.from_call` insist that `grpc-message` equals the
  Status' message, so Envoy's own varying text cannot be kept beside it). Refused tokens are
  told apart by jwt_authn's response code details, as for JSON: expired ("the access token
  has expired"), missing ("the request has no access token"), any other ("the access token is
  not valid"). jwt_authn's own texts ("Jwt is expired", "Jwt verification fails", "Jwt header
  is an invalid JSON") are its jargon and reach no client, JSON or gRPC.

A request counts as native gRPC when its content-type passes Envoy's own test
(`native_grpc`: `application/grpc` or `application/grpc+…`) and the transcoder did not
produce it (the transcoder marks what it transcodes with `x-envoy-original-method`). Envoy
answers exactly those in gRPC form; a content-type that only looks like gRPC
(`application/grpc; charset=utf-8`, `application/grpc-web`) gets the JSON reply, as any
transcoded request does.

Expired tokens are told apart from other bad tokens: jwt_authn answers both with 401, but an
expired one gets reason `TOKEN_EXPIRED` (the services' reason for it), matched on the reply's
response code details (`jwt_authn_access_denied{Jwt_is_expired}`) with a CEL filter. Every
other refused token stays `TOKEN_INVALID`. jwt_authn answers a token for another audience
with 403; a token the gateway does not accept is a credential problem, so that becomes 401
(UNAUTHENTICATED) too.

A gateway that holds no keys cannot tell a good token from a bad one: jwt_authn fetches auth's
JWKS in the background and keeps the last good set for good, but until a first fetch succeeds
(a pod started while auth is down or answers no usable key set) each request tries a fetch of
its own, and when that fails too jwt_authn answers 401 with the details
`jwt_authn_access_denied{Jwks_remote_fetch_is_failed}` whatever the token. That is auth being
unavailable, not a bad token (a client told TOKEN_INVALID signs its user out), so it becomes
503 UNAVAILABLE, reason `AUTH_UNAVAILABLE` ("the auth service is unavailable, retry later"), as
the services answer when they cannot check a token for the same reason; no `Retry-After`, as
for the gateway's other 503s. jwt_authn's `WWW-Authenticate: Bearer … error="invalid_token"`
is replaced by a bare `Bearer` challenge there: the token is not known to be invalid.

Native gRPC local replies carry `LOCAL_REPLY_MARK` for the `replies` filter, which removes
it: that filter gives upstream gRPC errors without an `ErrorInfo` a generic message
(`GENERIC_MESSAGES`), and must leave the gateway's own texts ("the access token has
expired") alone. The mark never leaves the gateway: `header_mutation`, the last filter on
the way back, removes it from every reply as well (`filters`).

Envoy refuses a protocol upgrade (`Upgrade: websocket`, `h2c`, ...) itself, before any
route, with a 403 and no text (response code details `upgrade_failed`: the config has no
`upgrade_configs`); a CONNECT request gets the same from its route (`routes`). Those become
400 `UPGRADE_NOT_SUPPORTED` saying what to use instead: a 403 read as a refused token would
have signed a WebSocket client out. Any other 403 Envoy makes itself is `PERMISSION_DENIED`
with a fixed text (jwt_authn's is the wrong-audience 401 above).

The JSON body check (`json_body`) writes its own `google.rpc.Status` bodies (reason
`UNKNOWN_FIELD` with BadRequest field violations). Envoy runs Lua replies through the mapper
too, so the first mapper keeps those verbatim; it matches a flag in the dynamic metadata,
which clients cannot set.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from vaultpay_gateway.native_grpc import native_grpc_content_type

__all__ = [
    "AUTH_UNAVAILABLE_REASON",
    "AUTH_UNAVAILABLE_TEXT",
    "DUPLICATE_FIELD_REASON",
    "ERROR_DOMAIN",
    "GATEWAY_ERRORS",
    "GENERIC_MESSAGES",
    "JSON_BODY_METADATA",
    "LOCAL_REPLY_MARK",
    "NOT_FOUND_TEXT",
    "QUERY_PARAMETER_REASON",
    "RATE_LIMITED_REASON",
    "TOKEN_EXPIRED_REASON",
    "TRANSCODE_FAILURE_HEADER",
    "UNKNOWN_FIELD_REASON",
    "UNSUPPORTED_MEDIA_TYPE_REASON",
    "UNSUPPORTED_MEDIA_TYPE_TEXT",
    "UPGRADE_NOT_SUPPORTED_REASON",
    "UPGRADE_NOT_SUPPORTED_TEXT",
    "GatewayError",
    "grpc_status_details",
    "local_reply_config",
]

ERROR_DOMAIN = "vaultpay.gateway"
# A JSON body key the request message does not have (400 / INVALID_ARGUMENT).
UNKNOWN_FIELD_REASON = "UNKNOWN_FIELD"
# A JSON body key given twice in one object, one field under both its spellings, or a query
# parameter of a field that is not repeated given more than once (400).
DUPLICATE_FIELD_REASON = "DUPLICATE_FIELD"
# A JSON value of the wrong shape or type for its field, e.g. a list for a single value (400).
INVALID_REQUEST_REASON = "INVALID_REQUEST"
# A query parameter on a `body: "*"` binding, whose fields belong in the body (400).
QUERY_PARAMETER_REASON = "QUERY_PARAMETER_NOT_ALLOWED"
# A request body sent without `content-type: application/json` (415 / INVALID_ARGUMENT).
UNSUPPORTED_MEDIA_TYPE_REASON = "UNSUPPORTED_MEDIA_TYPE"
UNSUPPORTED_MEDIA_TYPE_TEXT = (
    "the request body must be JSON, sent with content-type: application/json"
)
# A protocol upgrade (WebSocket, h2c) or a CONNECT, which the gateway does not carry (400).
UPGRADE_NOT_SUPPORTED_REASON = "UPGRADE_NOT_SUPPORTED"
UPGRADE_NOT_SUPPORTED_TEXT = (
    "protocol upgrades (WebSocket) and CONNECT are not supported;"
    " use GET /v1/notifications:watch (NDJSON) for notifications"
)
# Response code details of Envoy's refusal of an upgrade no `upgrade_configs` allows.
_UPGRADE_FAILED_DETAILS = "upgrade_failed"
# A reply of Envoy's own with 403 that no other mapper explains.
_FORBIDDEN_TEXT = "the gateway refused the request"
# Dynamic metadata namespace of the JSON body check (json_body.py).
JSON_BODY_METADATA = "vaultpay.json_body"
NOT_FOUND_TEXT = "no such API route"
TOKEN_EXPIRED_REASON = "TOKEN_EXPIRED"  # noqa: S105 - an error reason, not a secret
RATE_LIMITED_REASON = "RATE_LIMITED"
RATE_LIMITED_MESSAGE = "too many requests; try again later"
# jwt_authn's response code details for an expired token (its failure text, spaces as `_`).
_JWT_EXPIRED_DETAILS = "jwt_authn_access_denied{Jwt_is_expired}"
_JWT_MISSING_DETAILS = "jwt_authn_access_denied{Jwt_is_missing}"
# jwt_authn holds no keys and its own fetch of the JWKS failed (auth unreachable, an error
# reply, or a key set without a usable key: Envoy 1.40 says the same for each).
_JWKS_FETCH_FAILED_DETAILS = "jwt_authn_access_denied{Jwks_remote_fetch_is_failed}"
# What the services answer when they cannot check a token because auth is down (API.md).
AUTH_UNAVAILABLE_REASON = "AUTH_UNAVAILABLE"
AUTH_UNAVAILABLE_TEXT = "the auth service is unavailable, retry later"
# In the transcoder's details when it cannot convert a request (a JSON value of the wrong
# type in the body, `early_…` in the query).
_TRANSCODE_FAILURE_DETAILS = "grpc_json_transcode_failure"
# Marks those replies for the `replies` Lua filter, which removes it (Lua cannot read the
# response code details).
TRANSCODE_FAILURE_HEADER = "x-vaultpay-transcode-failure"
# Marks Envoy's own replies to native gRPC clients for the `replies` filter, which removes it.
LOCAL_REPLY_MARK = "x-vaultpay-local-reply"
# jwt_authn's response code details start with this for every refused token.
_JWT_DENIED_DETAILS = "jwt_authn_access_denied"
_ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
_ENVOY_TEXT = "%LOCAL_REPLY_BODY%"


@dataclass(frozen=True, slots=True)
class GatewayError:
    """How one HTTP status produced by Envoy is reported.

    `message` None keeps Envoy's text for JSON clients (useful for 4xx: the transcoder's
    text, which the `replies` filter rewords); 5xx use a fixed text so upstream addresses and
    reset reasons stay inside. gRPC clients always get a fixed text (`grpc_text`), the one
    serialised into their `grpc-status-details-bin`.
    """

    http_status: int
    code: int
    reason: str
    grpc_code: int
    message: str | None = None
    grpc_message: str | None = None

    @property
    def grpc_text(self) -> str:
        return self.grpc_message or self.message or GENERIC_MESSAGES[self.grpc_code][1]


# gRPC codes (google/rpc/code.proto).
_INVALID_ARGUMENT, _DEADLINE_EXCEEDED, _NOT_FOUND, _PERMISSION_DENIED = 3, 4, 5, 7
_RESOURCE_EXHAUSTED, _UNIMPLEMENTED, _INTERNAL, _UNAVAILABLE, _UNAUTHENTICATED = 8, 12, 13, 14, 16
_UNKNOWN = 2

# jwt_authn's texts ("Jwt verification fails", "Jwt is missing") are its jargon: every refused
# token gets one of these instead, JSON and gRPC clients alike.
_INVALID_TOKEN_TEXT = "the access token is not valid"  # noqa: S105 - a message
_EXPIRED_TOKEN_TEXT = "the access token has expired"  # noqa: S105 - a message
_MISSING_TOKEN_TEXT = "the request has no access token"  # noqa: S105 - a message

GATEWAY_ERRORS: tuple[GatewayError, ...] = (
    GatewayError(400, _INVALID_ARGUMENT, "INVALID_REQUEST", _INVALID_ARGUMENT),
    GatewayError(401, _UNAUTHENTICATED, "TOKEN_INVALID", _UNAUTHENTICATED, _INVALID_TOKEN_TEXT),
    # Not a token problem: jwt_authn's 403 and refused upgrades have mappers of their own.
    GatewayError(403, _PERMISSION_DENIED, "PERMISSION_DENIED", _PERMISSION_DENIED, _FORBIDDEN_TEXT),
    # A JSON client asked for a path that is not in the API; a gRPC client for a method the
    # gateway does not route: UNIMPLEMENTED is what gRPC servers answer for that.
    GatewayError(404, _NOT_FOUND, "NOT_FOUND", _UNIMPLEMENTED, NOT_FOUND_TEXT),
    GatewayError(
        408,
        _DEADLINE_EXCEEDED,
        "REQUEST_TIMEOUT",
        _DEADLINE_EXCEEDED,
        grpc_message="the request took too long to arrive",
    ),
    GatewayError(
        413,
        _RESOURCE_EXHAUSTED,
        "PAYLOAD_TOO_LARGE",
        _RESOURCE_EXHAUSTED,
        message="the request is too large",
    ),
    GatewayError(
        414,
        _INVALID_ARGUMENT,
        "URI_TOO_LONG",
        _INVALID_ARGUMENT,
        grpc_message="the request path is too long",
    ),
    # A body that is not declared as JSON (`json_body`'s capture refuses it before the
    # transcoder, which would read any body as JSON).
    GatewayError(
        415,
        _INVALID_ARGUMENT,
        UNSUPPORTED_MEDIA_TYPE_REASON,
        _INVALID_ARGUMENT,
        message=UNSUPPORTED_MEDIA_TYPE_TEXT,
    ),
    GatewayError(
        429,
        _RESOURCE_EXHAUSTED,
        RATE_LIMITED_REASON,
        _RESOURCE_EXHAUSTED,
        message=RATE_LIMITED_MESSAGE,
    ),
    GatewayError(
        431,
        _INVALID_ARGUMENT,
        "HEADERS_TOO_LARGE",
        _INVALID_ARGUMENT,
        grpc_message="the request headers are too large",
    ),
    GatewayError(500, _INTERNAL, "INTERNAL", _INTERNAL, "internal gateway error"),
    GatewayError(502, _UNAVAILABLE, "UNAVAILABLE", _UNAVAILABLE, "service unavailable"),
    GatewayError(503, _UNAVAILABLE, "UNAVAILABLE", _UNAVAILABLE, "service unavailable"),
    GatewayError(
        504, _DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT", _DEADLINE_EXCEEDED, "upstream timeout"
    ),
)
_FALLBACK = GatewayError(0, _UNKNOWN, "UNKNOWN", _UNKNOWN)

# What an upstream error without a google.rpc.ErrorInfo says instead of its own text (gRPC
# core's texts name internal headers and limits): gRPC code -> (ErrorInfo reason, message).
GENERIC_MESSAGES: Mapping[int, tuple[str, str]] = MappingProxyType(
    {
        1: ("CANCELLED", "the request was cancelled"),
        2: ("UNKNOWN", "unknown error"),
        3: ("INVALID_ARGUMENT", "invalid request"),
        4: ("DEADLINE_EXCEEDED", "the request took too long"),
        5: ("NOT_FOUND", "not found"),
        6: ("ALREADY_EXISTS", "already exists"),
        7: ("PERMISSION_DENIED", "permission denied"),
        8: ("RESOURCE_EXHAUSTED", "a limit was reached; try again later"),
        9: ("FAILED_PRECONDITION", "the request cannot be carried out in the current state"),
        10: ("ABORTED", "the request was aborted; try again"),
        11: ("OUT_OF_RANGE", "out of range"),
        12: ("UNIMPLEMENTED", "not implemented"),
        13: ("INTERNAL", "internal error"),
        14: ("UNAVAILABLE", "service unavailable"),
        15: ("INTERNAL", "internal error"),
        16: ("UNAUTHENTICATED", "unauthenticated"),
    }
)


def _literal(text: str) -> str:
    """`text` inside an Envoy format string, where `%` starts a command."""
    return text.replace("%", "%%")


def _status_json(error: GatewayError) -> dict[str, Any]:
    return {
        "json_format": {
            "code": error.code,
            "message": _ENVOY_TEXT if error.message is None else _literal(error.message),
            "details": [
                {"@type": _ERROR_INFO_TYPE, "reason": error.reason, "domain": ERROR_DOMAIN}
            ],
        },
        "content_type": "application/json",
    }


def _status_is(http_status: int) -> dict[str, Any]:
    return {
        "status_code_filter": {
            "comparison": {
                "op": "EQ",
                "value": {"default_value": http_status, "runtime_key": "vaultpay.unused"},
            }
        }
    }


# A request Envoy answers in gRPC form: native gRPC by Envoy's own test (`native_grpc`), and
# not produced by the transcoder, which sets `application/grpc` on what it transcodes.
_NATIVE_GRPC: dict[str, Any] = {
    "and_filter": {
        "filters": [
            native_grpc_content_type(),
            {
                "header_filter": {
                    "header": {
                        "name": "x-envoy-original-method",
                        "present_match": True,
                        "invert_match": True,
                    }
                }
            },
        ]
    }
}


def _text(text: str) -> dict[str, Any]:
    return {"text_format_source": {"inline_string": text}}


def _set_header(key: str, value: str) -> dict[str, Any]:
    return {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


def grpc_status_details(
    grpc_code: int, message: str, reason: str, retry_seconds: int | None = None
) -> str:
    """The `grpc-status-details-bin` value of one gateway error: a base64 `google.rpc.Status`
    with `grpc_code`, `message`, an `ErrorInfo` (`reason`, domain `vaultpay.gateway`) and, if
    `retry_seconds` is given, a `RetryInfo`. Padded base64, which gRPC clients accept."""
    status = status_pb2.Status(code=grpc_code, message=message)
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
    status.details.append(info)
    if retry_seconds is not None:
        retry = any_pb2.Any()
        retry.Pack(
            error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_seconds))
        )
        status.details.append(retry)
    return base64.b64encode(status.SerializeToString()).decode("ascii")


def _grpc_mapper(
    error: GatewayError,
    match: dict[str, Any] | None = None,
    *,
    retry_seconds: int | None = None,
) -> dict[str, Any]:
    """A native gRPC reply: trailers-only, status, fixed message and its Status details."""
    details = grpc_status_details(error.grpc_code, error.grpc_text, error.reason, retry_seconds)
    return {
        "filter": {
            "and_filter": {"filters": [_NATIVE_GRPC, match or _status_is(error.http_status)]}
        },
        "headers_to_add": [
            _set_header("grpc-status", str(error.grpc_code)),
            _set_header("grpc-status-details-bin", details),
            _set_header(LOCAL_REPLY_MARK, "1"),
        ],
        "body_format_override": _text(_literal(error.grpc_text)),
    }


def _json_mapper(error: GatewayError) -> dict[str, Any]:
    return {
        "filter": _status_is(error.http_status),
        "body_format_override": _status_json(error),
    }


def _details_match(http_status: int, expression: str) -> dict[str, Any]:
    """A reply of `http_status` whose CEL `expression` (on `response.code_details`) holds."""
    cel = {
        "extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3"
                ".ExpressionFilter",
                "expression": expression,
            },
        }
    }
    return {"and_filter": {"filters": [_status_is(http_status), cel]}}


_WRONG_AUDIENCE = GatewayError(
    401, _UNAUTHENTICATED, "TOKEN_INVALID", _UNAUTHENTICATED, _INVALID_TOKEN_TEXT
)


def _jwt_forbidden() -> dict[str, Any]:
    """jwt_authn's 403: a token for another audience (RFC 6750 calls that invalid_token)."""
    return _details_match(403, f"response.code_details.startsWith('{_JWT_DENIED_DETAILS}')")


def _wrong_audience_mappers() -> tuple[dict[str, Any], dict[str, Any]]:
    """401 / UNAUTHENTICATED instead of jwt_authn's 403, for gRPC and for JSON clients."""
    json_mapper = {
        "filter": _jwt_forbidden(),
        "status_code": _WRONG_AUDIENCE.http_status,
        "body_format_override": _status_json(_WRONG_AUDIENCE),
    }
    return _grpc_mapper(_WRONG_AUDIENCE, _jwt_forbidden()), json_mapper


_EXPIRED = GatewayError(
    401, _UNAUTHENTICATED, TOKEN_EXPIRED_REASON, _UNAUTHENTICATED, _EXPIRED_TOKEN_TEXT
)
_MISSING = GatewayError(
    401, _UNAUTHENTICATED, "TOKEN_INVALID", _UNAUTHENTICATED, _MISSING_TOKEN_TEXT
)


def _jwt_is(details: str) -> dict[str, Any]:
    return _details_match(401, f"response.code_details == '{details}'")


def _token_expired_mapper() -> dict[str, Any]:
    """An expired token: 401 like any refused token, but reason TOKEN_EXPIRED, so clients know
    that refreshing helps. The CEL filter reads the reply's response code details."""
    return {
        "filter": _jwt_is(_JWT_EXPIRED_DETAILS),
        "body_format_override": _status_json(_EXPIRED),
    }


def _token_missing_mapper() -> dict[str, Any]:
    """No token at all: reason TOKEN_INVALID as for any refused token, in its own words."""
    return {
        "filter": _jwt_is(_JWT_MISSING_DETAILS),
        "body_format_override": _status_json(_MISSING),
    }


_AUTH_UNAVAILABLE = GatewayError(
    503, _UNAVAILABLE, AUTH_UNAVAILABLE_REASON, _UNAVAILABLE, AUTH_UNAVAILABLE_TEXT
)
# jwt_authn's challenge says `error="invalid_token"`; a mapper cannot remove a header, so it
# gets the bare scheme (RFC 7235 allows a challenge beside any status).
_BARE_CHALLENGE = _set_header("www-authenticate", "Bearer")


def _auth_unavailable_mappers() -> tuple[dict[str, Any], dict[str, Any]]:
    """503 AUTH_UNAVAILABLE instead of jwt_authn's 401 when it has no keys to check a token
    with (its fetch of the JWKS failed), for gRPC and for JSON clients."""
    match = _jwt_is(_JWKS_FETCH_FAILED_DETAILS)
    grpc_mapper = _grpc_mapper(_AUTH_UNAVAILABLE, match)
    grpc_mapper["headers_to_add"].append(_BARE_CHALLENGE)
    json_mapper = {
        "filter": match,
        "status_code": _AUTH_UNAVAILABLE.http_status,
        "headers_to_add": [_BARE_CHALLENGE],
        "body_format_override": _status_json(_AUTH_UNAVAILABLE),
    }
    return grpc_mapper, json_mapper


def _grpc_token_mappers() -> list[dict[str, Any]]:
    """gRPC replies for an expired and a missing token; any other 401 is the plain one."""
    return [
        _grpc_mapper(_EXPIRED, _jwt_is(_JWT_EXPIRED_DETAILS)),
        _grpc_mapper(_MISSING, _jwt_is(_JWT_MISSING_DETAILS)),
    ]


_UPGRADE = GatewayError(
    400,
    _INVALID_ARGUMENT,
    UPGRADE_NOT_SUPPORTED_REASON,
    _INVALID_ARGUMENT,
    UPGRADE_NOT_SUPPORTED_TEXT,
)


def _upgrade_refused() -> dict[str, Any]:
    """Envoy's 403 for an upgrade (or CONNECT) it does not carry."""
    return _details_match(403, f"response.code_details == '{_UPGRADE_FAILED_DETAILS}'")


def _upgrade_mappers() -> tuple[dict[str, Any], dict[str, Any]]:
    """400 UPGRADE_NOT_SUPPORTED instead of Envoy's bare 403, for gRPC and for JSON clients."""
    json_mapper = {
        "filter": _upgrade_refused(),
        "status_code": _UPGRADE.http_status,
        "body_format_override": _status_json(_UPGRADE),
    }
    return _grpc_mapper(_UPGRADE, _upgrade_refused()), json_mapper


_BAD_PATH = GatewayError(
    400,
    _INVALID_ARGUMENT,
    INVALID_REQUEST_REASON,
    _INVALID_ARGUMENT,
    message="the request path is not valid: an encoded slash (%2F, %5C) or NUL (%00) is not"
    " allowed",
)


def _bad_path_mapper() -> dict[str, Any]:
    """Envoy refuses a path it cannot normalise (an escaped slash: `path_with_escaped_slashes_
    action: REJECT_REQUEST`; an encoded NUL, which its normalisation refuses) with an empty
    text; say what is wrong instead."""
    return {
        "filter": _details_match(400, "response.code_details == 'path_normalization_failed'"),
        "body_format_override": _status_json(_BAD_PATH),
    }


def _transcode_failure_mapper() -> dict[str, Any]:
    """The transcoder could not read the JSON body: the usual 400 Status, marked with
    TRANSCODE_FAILURE_HEADER for the `replies` filter, which adds the field violation and
    removes the mark."""
    invalid = next(e for e in GATEWAY_ERRORS if e.http_status == 400)
    return {
        "filter": _details_match(
            400, f"response.code_details.contains('{_TRANSCODE_FAILURE_DETAILS}')"
        ),
        "headers_to_add": [
            {
                "header": {"key": TRANSCODE_FAILURE_HEADER, "value": "1"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
        "body_format_override": _status_json(invalid),
    }


def _json_body_check_mapper() -> dict[str, Any]:
    """Replies of the JSON body check already are `google.rpc.Status` JSON: kept as they are."""
    return {
        "filter": {
            "metadata_filter": {
                "matcher": {
                    "filter": JSON_BODY_METADATA,
                    "path": [{"key": "reply"}],
                    "value": {"bool_match": True},
                },
                "match_if_key_not_found": False,
            }
        },
        "body_format_override": {
            **_text(_ENVOY_TEXT),
            "content_type": "application/json",
        },
    }


def _verbatim_mapper(path_prefix: str) -> dict[str, Any]:
    """The docs' direct responses (200 under `path_prefix`) pass unchanged, with the content
    type their route sets. Without it the `body_format` below would wrap them in a Status."""
    return {
        "filter": {
            "and_filter": {
                "filters": [
                    _status_is(200),
                    {
                        "header_filter": {
                            "header": {"name": ":path", "string_match": {"prefix": path_prefix}}
                        }
                    },
                ]
            }
        },
        "body_format_override": _text(_ENVOY_TEXT),
    }


def local_reply_config(
    verbatim_path_prefix: str | None = None, retry_after_seconds: int = 1
) -> dict[str, Any]:
    """The HttpConnectionManager `local_reply_config`: the JSON body check's replies as they
    are, the docs (`verbatim_path_prefix`, if any) as they are, then gRPC mappers, then JSON
    ones (wrong audiences, refused upgrades, a JWKS that could not be fetched, expired tokens
    and transcoder failures before the plain status mappers).

    `retry_after_seconds` is the RetryInfo of a gRPC 429: what the client rate limit's
    `Retry-After` says. The RPC budgets' exact wait replaces it in the `replies` filter."""
    grpc_fallback = {
        "filter": _NATIVE_GRPC,
        "headers_to_add": [_set_header(LOCAL_REPLY_MARK, "1")],
        "body_format_override": _text(_ENVOY_TEXT),
    }
    verbatim = [] if verbatim_path_prefix is None else [_verbatim_mapper(verbatim_path_prefix)]
    grpc_wrong_audience, json_wrong_audience = _wrong_audience_mappers()
    grpc_upgrade, json_upgrade = _upgrade_mappers()
    grpc_auth_unavailable, json_auth_unavailable = _auth_unavailable_mappers()
    return {
        "mappers": [
            _json_body_check_mapper(),
            *verbatim,
            grpc_wrong_audience,
            grpc_upgrade,
            grpc_auth_unavailable,
            *_grpc_token_mappers(),
            *(
                _grpc_mapper(
                    e,
                    retry_seconds=retry_after_seconds if e.http_status == 429 else None,
                )
                for e in GATEWAY_ERRORS
            ),
            grpc_fallback,
            json_wrong_audience,
            json_upgrade,
            json_auth_unavailable,
            _token_expired_mapper(),
            _token_missing_mapper(),
            _transcode_failure_mapper(),
            _bad_path_mapper(),
            *(_json_mapper(e) for e in GATEWAY_ERRORS),
        ],
        "body_format": _status_json(_FALLBACK),
    }
