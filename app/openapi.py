"""The OpenAPI document as the service really behaves: how to authenticate, and every problem it answers.

FastAPI describes the happy path and a JSON 422. The service also answers, on every ``/api`` route,
401 (no valid key), 403 (role or grant), 413 (body too large), 429 (too many failed keys) and, where a
route can, 400, 404 and 409; all as RFC 9457 problem documents (application/problem+json), 422
included. Webhooks answer 403 for a bad signature. Generated clients and schema-driven fuzzers
(schemathesis) then agree with the server.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.problems import PROBLEM_JSON

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"loc": {"type": "array", "items": {}}, "msg": {"type": "string"}},
            },
        },
    },
    "additionalProperties": True,
}

_DESCRIPTIONS = {
    "400": "Bad request",
    "401": "No valid API key",
    "403": "The key's role or grants do not allow this",
    "404": "Not found",
    "409": "Conflict with the resource's state",
    "413": "Request body too large",
    "422": "The request failed validation",
    "429": "Too many failed authentications from this client",
}
_API = ("400", "401", "403", "404", "409", "413", "422", "429")
_WEBHOOK = ("400", "403", "404", "413", "422")
_OTHER = ("400", "413", "422")
_METHODS = ("get", "put", "post", "patch", "delete")


def _problem(code: str) -> dict[str, Any]:
    return {
        "description": _DESCRIPTIONS[code],
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def document(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes, description=app.description)
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for unused in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(unused, None)
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "An API key: sb_<id>_<secret>"},
        "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    for path, item in schema.get("paths", {}).items():
        codes = _API if path.startswith("/api/") else _WEBHOOK if path.startswith("/twilio/") else _OTHER
        for method in _METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for code in codes:
                responses[code] = _problem(code)
            if path.startswith("/api/"):
                operation["security"] = [{"bearer": []}, {"apiKeyHeader": []}]
            if "503" in responses:
                responses["503"] = {**_problem("422"), "description": responses["503"]["description"]}
    return schema


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


DOCS_ASSETS = "/docs-assets"


def install_docs(app: FastAPI) -> None:
    """The API docs served offline: Swagger UI at /docs and ReDoc at /redoc, their scripts and styles from the
    fastapi-offline package (no CDN), with the bearer scheme so a person can authorise with their key and try
    a request (the key stays in the page's storage across reloads)."""
    from pathlib import Path

    import fastapi_offline
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles

    static = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=static), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            swagger_ui_parameters={
                "persistAuthorization": True,
                "tryItOutEnabled": True,
                "displayRequestDuration": True,
            },
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json", title=f"{app.title} API", redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png", with_google_fonts=False,
        )  # fmt: skip
