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
