"""Interactive API docs served by the gateway itself: Swagger UI on the generated document.

    site = write_docs_site(Path("build/vaultpay.binpb"), Path("var/gateway/docs"))
    routes = docs_routes(site)   # direct_response routes, bodies read from site's files

`write_docs_site` writes everything the browser needs into one folder beside the Envoy config:
the OpenAPI document (`openapi`), an HTML page, a small script that starts Swagger UI, and
Swagger UI's own files copied from the `swagger-ui-bundle` wheel. Envoy serves each file from
a route with a `direct_response` whose body is that file (read once, at start-up), so
nothing else has to run and no request leaves the machine:

    GET /docs                 the page (also /docs/)
    GET /docs/openapi.json    the document
    GET /docs/<asset>         Swagger UI's script, style sheet and icons

The page loads only these paths (no CDN); Swagger UI's validator badge, which would send the
document to validator.swagger.io, is off, and a Content-Security-Policy holds the page to
its own origin. The routes are public, match GET and HEAD only, and switch off the filters
that would get in their way (the transcoder would answer 404 for an unknown method, the
JSON body filters and jwt_authn have nothing to do); `errors.local_reply_config` keeps their
bodies as they are.
"""

from __future__ import annotations

import html
import shutil
from dataclasses import dataclass
from pathlib import Path

from vaultpay_gateway._types import Json, typed
from vaultpay_gateway.openapi import build_openapi, render_openapi
from vaultpay_gateway.settings import SettingsError

__all__ = [
    "DOCS_PATH",
    "OPENAPI_PATH",
    "DocsAsset",
    "DocsSite",
    "docs_routes",
    "swagger_ui_dir",
    "write_docs_site",
]

DOCS_PATH = "/docs"
OPENAPI_PATH = f"{DOCS_PATH}/openapi.json"
_TITLE = "VaultPay API"
_JAVASCRIPT = "text/javascript; charset=utf-8"
# Swagger UI's files the page uses, copied from the wheel unchanged.
_VENDOR_FILES = {
    "swagger-ui-bundle.js": _JAVASCRIPT,
    "swagger-ui.css": "text/css; charset=utf-8",
    "index.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
_START_SCRIPT = "vaultpay-docs.js"
_CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        # Swagger UI (React) sets style attributes.
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self' data:",
        # The document, and "Try it out" calls to the API on this origin.
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
# Filters that must not act on the docs routes (names as in the public listener's chain).
_DISABLED_FILTERS = (
    "vaultpay.json_body.capture",
    "envoy.filters.http.grpc_json_transcoder",
    "envoy.filters.http.jwt_authn",
    "vaultpay.json_body.check",
)


@dataclass(frozen=True, slots=True)
class DocsAsset:
    """One URL path of the docs, answered with a file's bytes."""

    path: str
    file: Path
    content_type: str
    cache_control: str = "no-cache"
    is_page: bool = False


@dataclass(frozen=True, slots=True)
class DocsSite:
    directory: Path
    assets: tuple[DocsAsset, ...]

    @property
    def max_body_bytes(self) -> int:
        """The largest file: the route table's limit for direct response bodies."""
        return max(asset.file.stat().st_size for asset in self.assets)


def swagger_ui_dir() -> Path:
    """Swagger UI's static files, as shipped by the `swagger-ui-bundle` wheel."""
    try:
        # The wheel has no py.typed marker.
        from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]
    except ImportError:
        raise SettingsError(
            "the API docs need the swagger-ui-bundle package (requirements.lock); "
            "install it or turn the docs off (--no-docs)"
        ) from None
    path = Path(str(swagger_ui_path))
    missing = [name for name in _VENDOR_FILES if not (path / name).is_file()]
    if missing:
        raise SettingsError(f"Swagger UI files missing in {path}: {', '.join(missing)}")
    return path


def _page() -> str:
    title = html.escape(_TITLE)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title}</title>
  <link rel="stylesheet" href="{DOCS_PATH}/swagger-ui.css">
  <link rel="stylesheet" href="{DOCS_PATH}/index.css">
  <link rel="icon" type="image/png" href="{DOCS_PATH}/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="{DOCS_PATH}/favicon-16x16.png" sizes="16x16">
</head>
<body>
  <noscript>The interactive docs need JavaScript. The OpenAPI document itself is at
    <a href="{OPENAPI_PATH}">{OPENAPI_PATH}</a>.</noscript>
  <div id="swagger-ui"></div>
  <script src="{DOCS_PATH}/swagger-ui-bundle.js" charset="utf-8"></script>
  <script src="{DOCS_PATH}/{_START_SCRIPT}" charset="utf-8"></script>
</body>
</html>
"""


def _start_script() -> str:
    return f"""// Starts Swagger UI on the gateway's own OpenAPI document (vaultpay_gateway/docs.py).
"use strict";
window.addEventListener("load", function () {{
  window.ui = SwaggerUIBundle({{
    url: "{OPENAPI_PATH}",
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "BaseLayout",
    deepLinking: true,
    displayOperationId: true,
    docExpansion: "none",
    filter: true,
    // Never send the document to validator.swagger.io (the default): everything stays local.
    validatorUrl: null,
    // No ?url= / ?configUrl= from the address bar: the page shows this gateway's API only.
    queryConfigEnabled: false,
    // A token typed into "Authorize" is forgotten when the page closes.
    persistAuthorization: false
  }});
}});
"""


def write_docs_site(descriptor_set: Path, directory: Path) -> DocsSite:
    """Writes the docs' files into `directory` and describes the routes that serve them."""
    directory.mkdir(parents=True, exist_ok=True)
    directory = directory.resolve()
    (directory / "openapi.json").write_text(
        render_openapi(build_openapi(descriptor_set)), encoding="utf-8"
    )
    (directory / "index.html").write_text(_page(), encoding="utf-8")
    (directory / _START_SCRIPT).write_text(_start_script(), encoding="utf-8")
    vendor = swagger_ui_dir()
    for name in _VENDOR_FILES:
        shutil.copyfile(vendor / name, directory / name)

    page = directory / "index.html"
    assets = [
        DocsAsset(DOCS_PATH, page, "text/html; charset=utf-8", is_page=True),
        DocsAsset(f"{DOCS_PATH}/", page, "text/html; charset=utf-8", is_page=True),
        DocsAsset(OPENAPI_PATH, directory / "openapi.json", "application/json"),
        DocsAsset(f"{DOCS_PATH}/{_START_SCRIPT}", directory / _START_SCRIPT, _JAVASCRIPT),
    ]
    assets.extend(
        # Swagger UI's files change only with the wheel's version.
        DocsAsset(f"{DOCS_PATH}/{name}", directory / name, content_type, "public, max-age=3600")
        for name, content_type in _VENDOR_FILES.items()
    )
    return DocsSite(directory, tuple(assets))


def _header(key: str, value: str) -> Json:
    return {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


def _route(asset: DocsAsset) -> Json:
    headers = [
        _header("content-type", asset.content_type),
        _header("cache-control", asset.cache_control),
        _header("x-content-type-options", "nosniff"),
    ]
    if asset.is_page:
        headers += [
            _header("content-security-policy", _CSP),
            _header("referrer-policy", "no-referrer"),
        ]
    disabled = typed("envoy.config.route.v3.FilterConfig", disabled=True)
    return {
        "name": f"docs {asset.path}",
        "match": {
            "path": asset.path,
            "headers": [{"name": ":method", "string_match": {"safe_regex": {"regex": "GET|HEAD"}}}],
        },
        "direct_response": {"status": 200, "body": {"filename": str(asset.file)}},
        "response_headers_to_add": headers,
        "typed_per_filter_config": dict.fromkeys(_DISABLED_FILTERS, disabled),
    }


def docs_routes(site: DocsSite) -> list[Json]:
    """One route per docs path; public, GET and HEAD only."""
    return [_route(asset) for asset in site.assets]
