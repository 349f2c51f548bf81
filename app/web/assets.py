"""The browser pages' third-party files (GraphiQL at /graphql, Swagger UI at /docs).

Every file is an exact file of an npm release, pinned here with its version and the Subresource
Integrity hash of that file in the package's tarball. By default they are served by this service
from copies shipped in `app/web/vendor/{package}@{version}/` (so both pages work without internet),
at `/assets/{package}@{version}/{file}`; with ASSETS_CDN_URL they load from that npm CDN instead
(`{cdn}/{package}@{version}/{file}`, the layout of unpkg and jsDelivr's `/npm`). Either way the
page's tags carry the integrity hash, so the browser runs nothing but these exact bytes, and this
service refuses to serve a shipped copy that does not match it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from fastapi import APIRouter
from starlette.responses import Response

from app.errors import AppError, NotFound

ASSETS_PATH = "/assets"
VENDOR_DIR = Path(__file__).with_name("vendor")
_ASSETS_MARKER = "<!-- assets -->"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
_CONTENT_TYPES = {"script": "text/javascript; charset=utf-8", "style": "text/css; charset=utf-8"}


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of an npm package release."""

    package: str
    version: str
    path: str
    integrity: str  # SRI of the file in the package's npm tarball
    kind: Literal["script", "style"]

    @property
    def name(self) -> str:
        """`{package}@{version}/{path}`: where a CDN and this service both serve it."""
        return f"{self.package}@{self.version}/{self.path}"

    def url(self, cdn_url: str | None) -> str:
        base = cdn_url.rstrip("/") if cdn_url else ASSETS_PATH
        return f"{base}/{self.name}"

    def tag(self, cdn_url: str | None) -> str:
        url = html.escape(self.url(cdn_url))
        if self.kind == "style":
            return (
                f'    <link rel="stylesheet" href="{url}" integrity="{self.integrity}"'
                ' crossorigin="anonymous" />'
            )
        return (
            f'    <script src="{url}" integrity="{self.integrity}"'
            ' crossorigin="anonymous"></script>'
        )


GRAPHIQL_ASSETS = (  # in load order: GraphiQL's UMD build expects React and ReactDOM as globals
    Asset(
        "graphiql",
        "3.8.3",
        "graphiql.min.css",
        "sha384-Mq3vbRBY71jfjQAt/DcjxUIYY33ksal4cgdRt9U/hNPvHBCaT2JfJ/PTRiPKf0aM",
        "style",
    ),
    Asset(
        "react",
        "18.2.0",
        "umd/react.production.min.js",
        "sha384-tMH8h3BGESGckSAVGZ82T9n90ztNXxvdwvdM6UoR56cYcf+0iGXBliJ29D+wZ/x8",
        "script",
    ),
    Asset(
        "react-dom",
        "18.2.0",
        "umd/react-dom.production.min.js",
        "sha384-bm7MnzvK++ykSwVJ2tynSE5TRdN+xL418osEVF2DE/L/gfWHj91J2Sphe582B1Bh",
        "script",
    ),
    Asset(
        "graphiql",
        "3.8.3",
        "graphiql.min.js",
        "sha384-HbRVEFG0JGJZeAHCJ9Xm2+tpknBQ7QZmNlO/DgZtkZ0aJSypT96YYGRNod99l9Ie",
        "script",
    ),
    Asset(
        "graphql-ws",
        "5.16.2",
        "umd/graphql-ws.min.js",
        "sha384-+EVxFEOpy8LWPRQcpntm0FKN2O+BzrMNSL0G3HIgVWFmeb6xqZqjuLivrQUTXZKi",
        "script",
    ),
)

SWAGGER_UI_ASSETS = (
    Asset(
        "swagger-ui-dist",
        "5.35.0",
        "swagger-ui.css",
        "sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I",
        "style",
    ),
    Asset(
        "swagger-ui-dist",
        "5.35.0",
        "swagger-ui-bundle.js",
        "sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9",
        "script",
    ),
)

ASSETS = {asset.name: asset for asset in (*GRAPHIQL_ASSETS, *SWAGGER_UI_ASSETS)}


def sri(body: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode("ascii")


class AssetMismatch(AppError):
    default_message = "A shipped asset does not match its pinned hash; reinstall the package"


@cache
def shipped(name: str) -> bytes:
    """The shipped copy of a pinned asset, checked against its hash (read once)."""
    asset = ASSETS.get(name)
    if asset is None:
        raise NotFound("No such asset")
    body = (VENDOR_DIR / asset.name).read_bytes()
    if sri(body) != asset.integrity:
        raise AssetMismatch()
    return body


router = APIRouter(include_in_schema=False)


@router.get(ASSETS_PATH + "/{name:path}")
async def asset(name: str) -> Response:
    body = shipped(name)
    return Response(
        body,
        media_type=_CONTENT_TYPES[ASSETS[name].kind],
        # The URL names the exact version: the file behind it never changes.
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


def render_page(template: Path, assets: tuple[Asset, ...], cdn_url: str | None) -> tuple[str, str]:
    """A page template with its asset tags put in at `<!-- assets -->`, and its policy."""
    tags = "\n".join(asset.tag(cdn_url) for asset in assets)
    page = template.read_text(encoding="utf-8").replace(_ASSETS_MARKER, tags)
    return page, page_policy(cdn_url, page)


def page_policy(cdn_url: str | None, page: str) -> str:
    """A Content-Security-Policy for a page made of these assets and its own inline scripts."""
    origin = _origin(cdn_url) if cdn_url else "'self'"
    script_hashes = " ".join(
        "'sha256-{}'".format(
            base64.b64encode(hashlib.sha256(body.encode()).digest()).decode("ascii")
        )
        for body in _INLINE_SCRIPT.findall(page)
    )
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src {origin} {script_hashes}",
            # The editors and menus of both pages set inline styles.
            f"style-src {origin} 'unsafe-inline'",
            "font-src data:",
            "img-src 'self' data:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"
