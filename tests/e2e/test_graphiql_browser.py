"""GraphiQL at /graphql in headless Chromium (js/graphiql.mjs), used as a person would, with
every request that would leave loopback aborted.

By default the page loads React, GraphiQL and graphql-ws from this service (the copies shipped
in app/web/vendor), with Subresource Integrity. With ASSETS_CDN_URL it loads them from that CDN;
the browser script then answers the CDN's URLs from the npm packages in js/node_modules, so the
page only runs if they are byte-identical to what app/web/assets.py pins.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.graphql.graphiql import graphiql_page
from app.web.assets import GRAPHIQL_ASSETS as ASSETS
from app.web.assets import VENDOR_DIR, sri
from tests.conftest import Database, LiveServer, base_settings, start_server, stop_server
from tests.e2e.conftest import (
    CDN_URL,
    PAGES_DIR,
    STREAM,
    NodeClients,
    StreamedReply,
    assert_reply_is_what_the_model_sent,
)
from tests.fakes.groq_server import FakeGroq, Scenario
from tests.support.api import Api

pytestmark = pytest.mark.e2e

TOKENS = ["Graph", "i", "QL", " shows", " every", " delta", "."]


def graphiql(
    server: LiveServer,
    query: str,
    *,
    variables: object = None,
    headers: object = None,
    until: str,
    screenshot: Path | None = None,
    **more: object,
) -> dict[str, object]:
    """Options for js/graphiql.mjs: what to paste into each pane (None: leave it empty), the
    text to wait for in the result pane, and where to save the screenshot."""
    return {
        "graphqlUrl": f"{server.base_url}/graphql",
        "cdnUrl": server.settings.assets_cdn_url,
        **more,
        "query": query.strip() + "\n",
        "variables": None if variables is None else json.dumps(variables),
        "headers": None if headers is None else json.dumps(headers),
        "until": until,
        "screenshot": None if screenshot is None else str(screenshot),
    }


def distinct_in_order(values: list[str]) -> list[str]:
    return [value for i, value in enumerate(values) if i == 0 or values[i - 1] != value]


def test_graphiql_assets_are_the_pinned_npm_files(node_modules: Path) -> None:
    for asset in ASSETS:
        root = node_modules / asset.package
        assert json.loads((root / "package.json").read_text())["version"] == asset.version
        assert asset.integrity == sri((root / asset.path).read_bytes())
        assert (VENDOR_DIR / asset.name).read_bytes() == (root / asset.path).read_bytes()
        assert f'"/assets/{asset.name}" integrity="{asset.integrity}"' in graphiql_page().html
        assert asset.url(CDN_URL) in graphiql_page(CDN_URL).html


def test_the_page_loads_its_assets_from_the_configured_cdn_only() -> None:
    page = graphiql_page("https://cdn.jsdelivr.net/npm/")

    for asset in ASSETS:
        url = f"https://cdn.jsdelivr.net/npm/{asset.package}@{asset.version}/{asset.path}"
        assert f'"{url}" integrity="{asset.integrity}"' in page.html
    assert "unpkg.com" not in page.html
    assert "script-src https://cdn.jsdelivr.net 'sha256-" in page.content_security_policy


def test_the_browser_page_pins_the_same_graphql_ws_build() -> None:
    (graphql_ws,) = (asset for asset in ASSETS if asset.package == "graphql-ws")
    page = (PAGES_DIR / "graphql-ws.html").read_text()
    assert f'src="{graphql_ws.url(CDN_URL)}"' in page
    assert f'integrity="{graphql_ws.integrity}"' in page


async def test_graphiql_streams_a_subscription_authenticated_by_the_headers_pane(
    chromium: NodeClients,
    server: LiveServer,
    api: Api,
    fake_groq: FakeGroq,
    artifacts: Path,
) -> None:
    user = await api.register()
    conversation_id = (await api.create_conversation(user))["id"]
    # Slow enough that the result pane shows every event in turn.
    fake_groq.enqueue(Scenario(tokens=TOKENS, token_interval=0.15))
    first_request = len(fake_groq.requests)
    content = "Stream into GraphiQL"
    authorization = {"Authorization": f"Bearer {user.token}"}

    output = await chromium.run(
        "graphiql.mjs",
        graphiql(
            server,
            STREAM,
            variables={"conversationId": conversation_id, "content": content},
            headers=authorization,
            until="MESSAGE_STOP",
            screenshot=artifacts / "graphiql-subscription.png",
        ),
    )

    report = output["report"]
    assert report["status"] == 200
    assert report["csp"] == graphiql_page().content_security_policy
    assert report["cdnServed"] == [] and report["external"] == []
    for asset in ASSETS:
        assert f"GET {server.base_url}{asset.url(None)}" in report["requests"]
    (socket,) = report["websockets"]
    assert socket["url"] == server.ws_url
    assert report["pageErrors"] == []
    assert report["console"] == []
    assert json.loads(output["variablesPane"])["conversationId"] == conversation_id
    assert json.loads(output["headersPane"]) == authorization

    # The result pane showed each event as it arrived: start, every delta, delta, stop.
    shown = [json.loads(value) for value in distinct_in_order(output["responses"])]
    reply = StreamedReply.from_results(shown)
    assert len(fake_groq.requests) == first_request + 1
    assert_reply_is_what_the_model_sent(reply, fake_groq.requests[first_request], content)
    assert reply.deltas == TOKENS
    assert f'"content": "{"".join(TOKENS)}"' in output["visibleResponse"]


async def test_graphiql_subscription_without_the_header_is_refused(
    chromium: NodeClients, server: LiveServer, api: Api, fake_groq: FakeGroq, artifacts: Path
) -> None:
    user = await api.register()
    conversation_id = (await api.create_conversation(user))["id"]
    requests_before = len(fake_groq.requests)

    output = await chromium.run(
        "graphiql.mjs",
        graphiql(
            server,
            STREAM,
            variables={"conversationId": conversation_id, "content": "Nobody sees this"},
            until="4403",
            screenshot=artifacts / "graphiql-refused.png",
        ),
    )

    assert output["headersPane"] == ""
    assert "WebSocket closed (4403 Forbidden)" in output["visibleResponse"]
    assert "Authorization" in output["visibleResponse"]  # the hint
    assert len(fake_groq.requests) == requests_before


async def test_graphiql_sends_the_headers_pane_with_queries_over_http(
    chromium: NodeClients, server: LiveServer, api: Api
) -> None:
    user = await api.register()

    output = await chromium.run(
        "graphiql.mjs",
        graphiql(
            server,
            "query Me { me { email } }",
            headers={"Authorization": f"Bearer {user.token}"},
            until='"email"',
        ),
    )

    assert json.loads(output["responses"][-1]) == {"data": {"me": {"email": user.email}}}
    assert output["report"]["websockets"] == []


async def test_a_subscription_pasted_and_run_at_once_goes_over_the_websocket(
    chromium: NodeClients, server: LiveServer, api: Api, fake_groq: FakeGroq, artifacts: Path
) -> None:
    """GraphiQL hands the fetcher its last parse of the editor, from before the paste (here a
    query named Me); the operation actually sent is a subscription, and it streams."""
    user = await api.register()
    conversation_id = (await api.create_conversation(user))["id"]
    fake_groq.enqueue(Scenario(tokens=TOKENS, token_interval=0.02))
    first_request = len(fake_groq.requests)
    content = "Pasted and run"

    output = await chromium.run(
        "graphiql.mjs",
        graphiql(
            server,
            STREAM,
            variables={"conversationId": conversation_id, "content": content},
            headers={"Authorization": f"Bearer {user.token}"},
            until="MESSAGE_STOP",
            screenshot=artifacts / "graphiql-pasted-subscription.png",
            previousQuery="query Me { me { email } }",
            runAtOnce=True,
        ),
    )

    report = output["report"]
    (socket,) = report["websockets"]  # before the fix: none, and an HTTP error in the pane
    assert any('"type":"subscribe"' in frame for frame in socket["sent"])
    shown = [json.loads(value) for value in distinct_in_order(output["responses"])]
    reply = StreamedReply.from_results(shown)
    assert_reply_is_what_the_model_sent(reply, fake_groq.requests[first_request], content)


@pytest.fixture(scope="module")
async def cdn_server(
    database: Database, fake_groq: FakeGroq, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveServer]:
    """The same service configured with ASSETS_CDN_URL."""
    settings = base_settings(
        database, fake_groq, tmp_path_factory.mktemp("cdn"), assets_cdn_url=CDN_URL
    )
    live, uv_server, task = await start_server(settings)
    try:
        yield live
    finally:
        await stop_server(uv_server, task)


async def test_with_a_cdn_configured_graphiql_loads_from_it_and_still_works(
    chromium: NodeClients, cdn_server: LiveServer
) -> None:
    async with httpx.AsyncClient(base_url=cdn_server.base_url, timeout=30) as http:
        user = await Api(http, cdn_server.ws_url).register()

    output = await chromium.run(
        "graphiql.mjs",
        graphiql(
            cdn_server,
            "query Me { me { email } }",
            headers={"Authorization": f"Bearer {user.token}"},
            until='"email"',
        ),
    )

    report = output["report"]
    assert report["csp"] == graphiql_page(CDN_URL).content_security_policy
    assert sorted(report["cdnServed"]) == sorted(asset.url(CDN_URL) for asset in ASSETS)
    assert report["cdnRefused"] == [] and report["external"] == []
    assert not any("/assets/" in request for request in report["requests"])
    assert json.loads(output["responses"][-1]) == {"data": {"me": {"email": user.email}}}
