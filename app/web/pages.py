"""`GET /` (where to go from here) and `GET /docs` (Swagger UI, served with its own files)."""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from app.runtime import runtime_of
from app.web.assets import SWAGGER_UI_ASSETS, render_page

router = APIRouter(include_in_schema=False)

_SWAGGER_TEMPLATE = Path(__file__).with_name("swagger.html")


@cache
def swagger_page(cdn_url: str | None = None) -> tuple[str, str]:
    """Swagger UI's page and its Content-Security-Policy."""
    return render_page(_SWAGGER_TEMPLATE, SWAGGER_UI_ASSETS, cdn_url)


@router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    page, policy = swagger_page(runtime_of(request).settings.assets_cdn_url)
    return HTMLResponse(page, headers={"Content-Security-Policy": policy})


def _links(request: Request) -> dict[str, Any]:
    graphiql = runtime_of(request).settings.resolved_graphiql
    return {
        "name": request.app.title,
        "version": request.app.version,
        "links": {
            "docs": {"href": "/docs", "title": "REST API: Swagger UI"},
            "openapi": {"href": "/openapi.json", "title": "REST API: OpenAPI document"},
            "graphql": {
                "href": "/graphql",
                "title": "GraphQL" + (" (GraphiQL in a browser)" if graphiql else ""),
            },
            "health": {"href": "/healthz", "title": "Liveness"},
        },
    }


def _wants_html(request: Request) -> bool:
    # Browsers name text/html in Accept; API clients (curl, httpx, SDKs) send */* or JSON.
    return "text/html" in request.headers.get("accept", "")


@router.get("/")
async def home(request: Request) -> Response:
    """Where to go from here: JSON for API clients, a small page for browsers."""
    links = _links(request)
    if not _wants_html(request):
        return JSONResponse(links)
    items = "\n".join(
        f'      <li><a href="{html.escape(link["href"])}">{html.escape(link["href"])}</a> '
        f"{html.escape(link['title'])}</li>"
        for link in links["links"].values()
    )
    page = f"""<!doctype html>
<html lang="en">
  <head><meta charset="utf-8" /><title>{html.escape(links["name"])}</title></head>
  <body>
    <h1>{html.escape(links["name"])}</h1>
    <ul>
{items}
    </ul>
  </body>
</html>
"""
    return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'none'"})
