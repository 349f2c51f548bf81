"""GraphiQL at `/graphql`: our own page, because the stock one cannot authenticate subscriptions.

Strawberry's page hands the Headers pane to HTTP requests only; this one also sends those headers
as the `connection_init` payload of its graphql-ws (graphql-transport-ws) connection, which is
where this API reads websocket credentials. Queries and mutations go over HTTP POST.

The browser loads React, GraphiQL and graphql-ws from an npm CDN (`{cdn}/{package}@{version}/
{file}`, the layout of unpkg and jsDelivr's `/npm`), pinned to exact versions and checked with
Subresource Integrity: the hashes are those of the files in the npm tarballs, so a CDN (or a
mirror) serving anything else is refused by the browser. tests/e2e checks them against the
packages in tests/e2e/js and loads the page in Chromium with those files.

The response carries a Content-Security-Policy: scripts only from the CDN plus the page's own
inline script (by hash), connections only to this origin.
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

from starlette.responses import HTMLResponse

DEFAULT_CDN_URL = "https://unpkg.com"

_TEMPLATE = Path(__file__).with_name("graphiql.html")
_ASSETS_MARKER = "<!-- assets -->"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of an npm package, as a CDN serves it."""

    package: str
    version: str
    path: str
    integrity: str  # SRI of the file in the package's npm tarball
    kind: Literal["script", "style"]

    def url(self, cdn_url: str) -> str:
        return f"{cdn_url.rstrip('/')}/{self.package}@{self.version}/{self.path}"


# In load order: GraphiQL's UMD build expects React and ReactDOM as globals.
ASSETS = (
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


def _tag(asset: Asset, cdn_url: str) -> str:
    url = html.escape(asset.url(cdn_url))
    if asset.kind == "style":
        return (
            f'    <link rel="stylesheet" href="{url}" integrity="{asset.integrity}"'
            ' crossorigin="anonymous" />'
        )
    return (
        f'    <script src="{url}" integrity="{asset.integrity}" crossorigin="anonymous"></script>'
    )


def _content_security_policy(cdn_url: str, page: str) -> str:
    origin = _origin(cdn_url)
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
            # GraphiQL's editors and menus set inline styles.
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


@dataclass(frozen=True, slots=True)
class GraphiQLPage:
    html: str
    content_security_policy: str

    def response(self) -> HTMLResponse:
        return HTMLResponse(
            self.html, headers={"Content-Security-Policy": self.content_security_policy}
        )


@cache
def graphiql_page(cdn_url: str = DEFAULT_CDN_URL) -> GraphiQLPage:
    """The page with its assets loaded from `cdn_url` (an npm CDN's base URL)."""
    tags = "\n".join(_tag(asset, cdn_url) for asset in ASSETS)
    page = _TEMPLATE.read_text(encoding="utf-8").replace(_ASSETS_MARKER, tags)
    return GraphiQLPage(html=page, content_security_policy=_content_security_policy(cdn_url, page))
