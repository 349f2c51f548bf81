"""GraphiQL at `/graphql`: our own page, because the stock one cannot authenticate subscriptions.

Strawberry's page hands the Headers pane to HTTP requests only; this one also sends those headers
as the `connection_init` payload of its graphql-ws (graphql-transport-ws) connection, which is
where this API reads websocket credentials. Queries and mutations go over HTTP POST; the fetcher
picks the transport from the operation it is about to send (parsed from the text sent, not from
GraphiQL's last parse of the editor, which lags behind a paste).

React, GraphiQL and graphql-ws are pinned, integrity-checked npm files, served by this service
or loaded from ASSETS_CDN_URL (see app/web/assets.py). The response carries a
Content-Security-Policy: scripts only from there plus the page's own inline script (by hash),
connections only to this origin.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from starlette.responses import HTMLResponse

from app.web.assets import GRAPHIQL_ASSETS, render_page

_TEMPLATE = Path(__file__).with_name("graphiql.html")


@dataclass(frozen=True, slots=True)
class GraphiQLPage:
    html: str
    content_security_policy: str

    def response(self) -> HTMLResponse:
        return HTMLResponse(
            self.html, headers={"Content-Security-Policy": self.content_security_policy}
        )


@cache
def graphiql_page(cdn_url: str | None = None) -> GraphiQLPage:
    """The page, its assets served by this service or (with `cdn_url`) loaded from an npm CDN."""
    page, policy = render_page(_TEMPLATE, GRAPHIQL_ASSETS, cdn_url)
    return GraphiQLPage(html=page, content_security_policy=policy)
