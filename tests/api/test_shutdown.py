"""SIGTERM while replies stream: every reply is finalised before the process exits."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import TEST_API_KEY, TEST_JWT_SECRET, Database
from tests.fakes.groq_server import FakeGroq, Scenario
from tests.support.api import Api
from tests.support.streams import StreamResult, transports


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def process_server(
    database: Database, fake_groq: FakeGroq, tmp_path: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database.app_url,
        "DATA_DIR": str(tmp_path),
        "JWT_SECRET": TEST_JWT_SECRET,
        "BCRYPT_ROUNDS": "4",
        "LLM_PROVIDER": "groq",
        "GROQ_API_KEY": TEST_API_KEY,
        "GROQ_BASE_URL": fake_groq.base_url,
        "SHUTDOWN_GRACE_SECONDS": "10",
        "STREAM_CHECKPOINT_SECONDS": "0.5",
        "LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app", "--port", str(port), env=env, cwd=str(tmp_path)
    )
    base_url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            try:
                if (await client.get(f"{base_url}/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
        else:
            process.kill()
            pytest.fail("the server process did not start")
    try:
        yield process, base_url
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_sigterm_finalises_every_streaming_reply(
    process_server: tuple[asyncio.subprocess.Process, str],
    fake_groq: FakeGroq,
    owner_engine: AsyncEngine,
) -> None:
    process, base_url = process_server
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        api = Api(http, base_url.replace("http://", "ws://") + "/graphql")
        user = await api.register()
        clients = transports(http, api.ws_url)
        names = ["sse", "sse", "graphql-transport-ws", "graphql-ws"]
        fake_groq.enqueue(*[Scenario(n_tokens=400, token_interval=0.05)] * len(names))
        started = [asyncio.Event() for _ in names]
        streams = []
        for name, flag in zip(names, started, strict=True):
            conversation_id = str((await api.create_conversation(user))["id"])

            async def seen(event: dict[str, Any], flag: asyncio.Event = flag) -> None:
                if event["type"] == "content_block_delta":
                    flag.set()

            streams.append(
                asyncio.create_task(
                    clients[name].stream(user, conversation_id, "go", on_event=seen)
                )
            )
        await asyncio.wait_for(asyncio.gather(*(flag.wait() for flag in started)), 10)

        process.send_signal(signal.SIGTERM)
        results: list[StreamResult | BaseException] = await asyncio.gather(
            *streams, return_exceptions=True
        )
        exit_code = await asyncio.wait_for(process.wait(), 15)

    # uvicorn shuts down gracefully, then re-raises the signal it caught: "killed by SIGTERM".
    assert exit_code in (0, -signal.SIGTERM)
    for name, result in zip(names, results, strict=True):
        # Each client learns why its stream ended; none sees a cut connection.
        if name == "sse":
            assert isinstance(result, StreamResult), (name, result)
            assert result.error is not None and result.error["kind"] == "overloaded_error"
        elif isinstance(result, StreamResult):
            assert result.error is not None, name
            assert "shutting down" in result.error["errors"][0]["message"]
        else:  # uvicorn may close the socket first, with "service restart"
            assert isinstance(result, websockets.ConnectionClosed), (name, result)
            assert result.rcvd is not None and result.rcvd.code == 1012
        assert not isinstance(result, StreamResult) or "message_stop" not in result.types
    async with owner_engine.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT finish_reason, content FROM messages WHERE role = 'assistant'")
            )
        ).all()
    assert len(rows) == len(names)
    assert {row.finish_reason for row in rows} == {"cancelled"}
    assert all(row.content for row in rows)
