"""The API docs through a real Envoy: Swagger UI and the OpenAPI document under /docs."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.gateway.auth_double import SigningKey
from tests.gateway.harness import GatewayUnderTest
from tests.gateway.test_gateway_json import JSON, assert_gateway_error, bearer
from vaultpay_gateway.docs import swagger_ui_dir
from vaultpay_gateway.openapi import build_openapi, render_openapi


class _References(HTMLParser):
    """Every URL the page makes the browser load or link to."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href"} and value is not None:
                self.urls.append(value)


def _page_references(gateway: GatewayUnderTest) -> list[str]:
    reply = gateway.call("GET", "/docs")
    parser = _References()
    parser.feed(reply.body.decode())
    return parser.urls


def test_docs_page_is_html_that_loads_only_local_assets(gateway: GatewayUnderTest) -> None:
    reply = gateway.call("GET", "/docs")

    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert reply.headers["x-content-type-options"] == "nosniff"
    policy = reply.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "connect-src 'self'" in policy
    page = reply.body.decode()
    assert '<div id="swagger-ui">' in page
    assert not re.search(r"(?i)\b(https?:)?//", page), "no absolute or CDN URL in the page"
    urls = _page_references(gateway)
    assert "/docs/swagger-ui-bundle.js" in urls and "/docs/swagger-ui.css" in urls
    for url in urls:
        assert url.startswith("/docs/"), url
        asset = gateway.call("GET", url)
        assert asset.status == 200, url
        assert asset.body, url
    assert gateway.call("GET", "/docs/").body == reply.body


def test_start_script_loads_this_gateways_document_and_nothing_else(
    gateway: GatewayUnderTest,
) -> None:
    reply = gateway.call("GET", "/docs/vaultpay-docs.js")

    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/javascript")
    script = reply.body.decode()
    assert 'url: "/docs/openapi.json"' in script
    assert "validatorUrl: null" in script, "the default sends the document to swagger.io"
    assert "queryConfigEnabled: false" in script
    assert "//" not in script.replace("// ", "")


def test_openapi_json_is_the_generated_document(
    gateway: GatewayUnderTest, descriptor_set: Path
) -> None:
    reply = gateway.call("GET", "/docs/openapi.json")

    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/json"
    document = build_openapi(descriptor_set)
    assert reply.body.decode() == render_openapi(document)
    assert reply.json() == document
    assert reply.json()["servers"] == [{**document["servers"][0], "url": "/"}]


def test_swagger_ui_assets_are_served_whole_with_their_types(gateway: GatewayUnderTest) -> None:
    vendor = swagger_ui_dir()
    expected = {
        "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
        "swagger-ui.css": "text/css; charset=utf-8",
        "favicon-32x32.png": "image/png",
    }
    for name, content_type in expected.items():
        reply = gateway.call("GET", f"/docs/{name}")

        assert reply.status == 200, name
        assert reply.headers["content-type"] == content_type
        assert reply.body == (vendor / name).read_bytes(), f"{name} changed on the way"
        assert "max-age" in reply.headers["cache-control"]
    # The bundle is far above Envoy's default 4 KiB limit for direct responses.
    assert len((vendor / "swagger-ui-bundle.js").read_bytes()) > 1_000_000


def test_docs_are_public_and_ignore_tokens_and_bodies(gateway: GatewayUnderTest) -> None:
    for headers in ({"authorization": "Bearer not.a.jwt"}, {}):
        assert gateway.call("GET", "/docs/openapi.json", headers=headers).status == 200
    # The JSON body filters leave the docs alone, unknown keys and all.
    body = json.dumps({"isAdmin": True})
    reply = gateway.call("GET", "/docs", body, {"content-type": "application/json"})
    assert reply.status == 200
    head = gateway.call("HEAD", "/docs/openapi.json")
    assert head.status == 200 and head.body == b""


def test_only_the_docs_files_are_served(gateway: GatewayUnderTest) -> None:
    assert_gateway_error(gateway.call("POST", "/docs", "{}", JSON), 404, 5, "NOT_FOUND")
    assert_gateway_error(gateway.call("GET", "/docs/index.j2"), 404, 5, "NOT_FOUND")
    assert_gateway_error(gateway.call("GET", "/docs/../envoy.json"), 404, 5, "NOT_FOUND")
    assert_gateway_error(gateway.call("GET", "/docsx"), 404, 5, "NOT_FOUND")


def _sample(document: dict[str, Any], schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    if "enum" in schema:
        return str(schema["enum"][-1])
    if schema.get("type") == "array":
        return _sample(document, schema["items"])
    if schema.get("format") == "date-time":
        return "2026-01-02T03:04:05Z"
    return {"integer": "7", "boolean": "true", "number": "1.5"}.get(schema.get("type", ""), "7")


def test_documented_parameters_are_accepted_by_the_transcoder(
    gateway: GatewayUnderTest, signing_key: SigningKey
) -> None:
    """Every documented path and query parameter, sent at once, passes the transcoder
    (`reject_unknown_query_parameters`): what happens after it does not matter here."""
    document = gateway.call("GET", "/docs/openapi.json").json()
    token = bearer(signing_key.token())
    checked = 0

    for template, item in document["paths"].items():
        for verb, operation in item.items():
            parameters = operation.get("parameters", [])
            query = [p for p in parameters if p["in"] == "query"]
            if verb not in {"get", "delete"} or not query:
                continue
            path = template
            for parameter in parameters:
                value = quote(_sample(document, parameter["schema"]), safe="")
                if parameter["in"] == "path":
                    path = path.replace("{" + parameter["name"] + "}", value)
                else:
                    path += ("&" if "?" in path else "?") + f"{parameter['name']}={value}"
            reply = gateway.call(verb.upper(), path, headers=token)
            assert reply.status not in {400, 404}, f"{verb} {path}: {reply.body!r}"
            checked += 1
    assert checked >= 10
    # An undocumented parameter is refused, so the check above means something.
    assert_gateway_error(
        gateway.call("GET", "/v1/admin/users?pageSizes=7", headers=token),
        400,
        3,
        "INVALID_REQUEST",
    )
