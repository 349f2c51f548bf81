"""The OpenAPI document of the REST routes (`/openapi.json`, read by Swagger UI at `/docs`).

FastAPI documents what a route declares; two answers depend on what the route *is*, so they
are added here, once, for every route (including routes added later):

- `401` on every route that takes credentials (its operation lists the bearer and `x-api-key`
  schemes, which give Swagger UI its Authorize button);
- `413` on every route that takes a body (the body limit answers before the route runs), and
  on no other.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
_UNAUTHENTICATED = {"description": "No credentials, or bad ones", "content": _ERROR_BODY}
_TOO_LARGE = {
    "description": "Request body larger than MAX_REQUEST_BODY_BYTES",
    "content": _ERROR_BODY,
}


def complete(document: dict[str, Any]) -> dict[str, Any]:
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            if operation.get("security"):
                responses.setdefault("401", _UNAUTHENTICATED)
            if "requestBody" in operation:
                responses.setdefault("413", _TOO_LARGE)
            else:
                responses.pop("413", None)
    return document


def install(app: FastAPI) -> None:
    """Serve `complete` of FastAPI's document at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    summary=app.summary,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
