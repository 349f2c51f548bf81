"""End to end: third-party clients against the live server of tests/conftest.py.

The server is real uvicorn on loopback with PostgreSQL and the fake Groq as its model provider
(the `server` and `fake_groq` fixtures). The clients are the ones people use: Node `graphql-ws`,
Apollo Client and `eventsource-parser` (scripts in js/, pinned by js/package-lock.json), Python
`gql`, `httpx-sse` and Anthropic's `anthropic` SDK, `curl`, and Debian's Chromium driven by
playwright-core (GraphiQL and Swagger UI with every outside request blocked, and pages that
this suite serves from another loopback origin, in pages/).

`make e2e` installs what they need (npm ci, apt-get install chromium). A local run without them
skips the tests that need them; under CI=true it fails instead. Screenshots go to artifacts/.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from tests.fakes.groq_server import RecordedRequest

HERE = Path(__file__).resolve().parent
JS_DIR = HERE / "js"
PAGES_DIR = HERE / "pages"
ARTIFACTS_DIR = HERE / "artifacts"
DOCS = HERE.parent.parent / "docs" / "clients.md"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CDN_URL = "https://unpkg.com"  # what the pages load; the browser scripts answer it locally

# The subscription every client sends (docs/clients.md shows it; js/lib/documents.mjs too).
STREAM = """
subscription Stream($conversationId: ID!, $content: String!) {
  streamMessage(conversationId: $conversationId, content: $content) {
    __typename
    type
    messageId
    ... on MessageStartEvent { message { id role model } usage { inputTokens } }
    ... on ContentBlockDeltaEvent { index delta { text } }
    ... on MessageDeltaEvent { delta { stopReason } usage { outputTokens } latencyMs }
    ... on MessageStopEvent { message { id content finishReason } }
  }
}
"""

TYPENAMES = {
    "MESSAGE_START": "MessageStartEvent",
    "CONTENT_BLOCK_DELTA": "ContentBlockDeltaEvent",
    "MESSAGE_DELTA": "MessageDeltaEvent",
    "MESSAGE_STOP": "MessageStopEvent",
}


def missing_tool(what: str, fix: str) -> None:
    """Skip the test (fail it under CI=true): a tool it drives is not installed."""
    message = f"{what} is missing: {fix} (`make e2e` does it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + "; CI=true runs every end-to-end test")
    pytest.skip(message)


class NodeClients:
    """Runs the scripts in js/: one JSON argument in, one JSON line out."""

    async def run(self, script: str, options: dict[str, Any], *, timeout: float = 60) -> Any:
        process = await asyncio.create_subprocess_exec(
            "node",
            str(JS_DIR / script),
            json.dumps(options),
            cwd=JS_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "CHROMIUM_PATH": str(CHROMIUM)},
        )
        try:
            async with asyncio.timeout(timeout):
                stdout, stderr = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise AssertionError(f"node {script} did not finish in {timeout}s") from None
        assert process.returncode == 0, (
            f"node {script} exited with {process.returncode}:\n{stderr.decode()}"
        )
        return json.loads(stdout.decode().strip().splitlines()[-1])


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """tests/e2e/js/node_modules, as `npm ci` installs it from the lock file."""
    if shutil.which("node") is None:
        missing_tool("Node.js", "install Node 20 or later")
    if not (JS_DIR / "node_modules" / ".package-lock.json").exists():
        missing_tool("tests/e2e/js/node_modules", "run `npm ci` in tests/e2e/js")
    return JS_DIR / "node_modules"


@pytest.fixture(scope="session")
def node(node_modules: Path) -> NodeClients:
    return NodeClients()


@pytest.fixture(scope="session")
def chromium(node: NodeClients) -> NodeClients:
    """The Node runner, once Debian's Chromium is known to be there."""
    if not CHROMIUM.exists():
        missing_tool(str(CHROMIUM), "apt-get install -y chromium")
    return node


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    return ARTIFACTS_DIR


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def page_origin() -> str:
    """The origin of the test's own pages: another loopback port than the API's."""
    return f"http://127.0.0.1:{free_port()}"


@asynccontextmanager
async def serve_on_loopback(app: ASGIApp, port: int) -> AsyncIterator[str]:
    """Serve `app` (a test's own, not the API) at http://127.0.0.1:`port` while the block runs."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


@pytest.fixture(scope="module")
async def page_server(page_origin: str) -> AsyncIterator[str]:
    """Serves pages/ statically at `page_origin` (not the app: a page on another origin)."""
    port = int(page_origin.rsplit(":", 1)[1])
    async with serve_on_loopback(
        Starlette(routes=[Mount("/", StaticFiles(directory=PAGES_DIR))]), port
    ):
        yield page_origin


async def open_page(
    chromium: NodeClients, url: str, screenshot: Path | None, *, cdn: bool = False
) -> Any:
    """Open `url` (js/browser-page.mjs) and return what the page computed; with `cdn`, the CDN
    is served locally (and Playwright intercepts requests, answering CORS preflights itself:
    only for pages that do not call the API over fetch)."""
    output = await chromium.run(
        "browser-page.mjs",
        {
            "url": url,
            "cdnUrl": CDN_URL if cdn else None,
            "screenshot": str(screenshot) if screenshot else None,
        },
    )
    assert output["report"]["status"] == 200
    assert output["report"]["external"] == []
    assert output["report"]["cdnRefused"] == []
    return output


@dataclass
class StreamedReply:
    """The `streamMessage` payloads a client received, in order."""

    events: list[dict[str, Any]]

    @classmethod
    def from_results(cls, results: list[dict[str, Any]]) -> StreamedReply:
        """From GraphQL execution results (`{"data": {"streamMessage": ...}}`), error-free."""
        for result in results:
            assert not result.get("errors"), result
        return cls([result["data"]["streamMessage"] for result in results])

    @property
    def kinds(self) -> list[str]:
        return [event["type"] for event in self.events]

    @property
    def deltas(self) -> list[str]:
        return [e["delta"]["text"] for e in self.events if e["type"] == "CONTENT_BLOCK_DELTA"]

    @property
    def text(self) -> str:
        return "".join(self.deltas)

    def first(self, kind: str) -> dict[str, Any]:
        return next(event for event in self.events if event["type"] == kind)


def assert_reply_is_what_the_model_sent(
    reply: StreamedReply, upstream: RecordedRequest, content: str
) -> None:
    """The four event kinds in order, carrying exactly what the fake Groq streamed."""
    kinds = reply.kinds
    assert kinds[0] == "MESSAGE_START", kinds
    assert kinds[-2:] == ["MESSAGE_DELTA", "MESSAGE_STOP"], kinds
    assert set(kinds[1:-2]) == {"CONTENT_BLOCK_DELTA"}, kinds
    for event in reply.events:
        assert event["__typename"] == TYPENAMES[event["type"]], event
    start, delta, stop = (
        reply.first("MESSAGE_START"),
        reply.first("MESSAGE_DELTA"),
        reply.events[-1],
    )
    message_id = start["message"]["id"]
    assert {event["messageId"] for event in reply.events} == {message_id}
    assert start["message"]["role"] == "ASSISTANT"
    assert start["message"]["model"] == upstream.body["model"]
    assert start["usage"]["inputTokens"] > 0
    assert all(event["index"] == 0 for event in reply.events if "index" in event)

    assert upstream.body["messages"][-1] == {"role": "user", "content": content}
    assert upstream.text_sent, "the fake sent no text"
    assert reply.text == upstream.text_sent
    assert delta["delta"]["stopReason"] == "end_turn"
    assert upstream.usage is not None
    assert delta["usage"]["outputTokens"] == upstream.usage["completion_tokens"]
    assert delta["latencyMs"] >= 0
    stored = {key: stop["message"][key] for key in ("id", "content", "finishReason")}
    assert stored == {
        "id": message_id,
        "content": upstream.text_sent,
        "finishReason": "end_turn",
    }


def assert_sse_reply_is_what_the_model_sent(
    events: list[tuple[str, dict[str, Any]]], upstream: RecordedRequest, content: str
) -> None:
    """SSE `(event name, data)` pairs: the four kinds in order, with Anthropic's block events
    around the deltas, carrying what the fake sent."""
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "content_block_start"], names
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"], names
    assert set(names[2:-3]) == {"content_block_delta"}, names
    assert all(data["type"] == name for name, data in events)
    data = [data for _, data in events]
    start, delta = data[0], data[-2]
    assert data[1]["content_block"] == {"type": "text", "text": ""}
    assert start["message"]["stop_sequence"] is None
    assert start["message"]["role"] == "assistant"
    assert start["message"]["model"] == upstream.body["model"]
    assert start["message"]["usage"]["input_tokens"] > 0
    assert upstream.body["messages"][-1] == {"role": "user", "content": content}
    assert upstream.text_sent, "the fake sent no text"
    assert "".join(d["delta"]["text"] for d in data[2:-3]) == upstream.text_sent
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert upstream.usage is not None
    assert delta["usage"]["output_tokens"] == upstream.usage["completion_tokens"]


_SNIPPET = re.compile(r"<!-- snippet: (?P<name>[\w-]+) -->\n+```\w*\n(?P<code>.*?)```", re.DOTALL)


def doc_snippets() -> dict[str, str]:
    """docs/clients.md's tested code blocks by name (each follows `<!-- snippet: NAME -->`)."""
    text = DOCS.read_text(encoding="utf-8")
    return {match["name"]: match["code"] for match in _SNIPPET.finditer(text)}
