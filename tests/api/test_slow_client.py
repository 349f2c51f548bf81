"""A client that stops reading gets, once it reads again, what piled up joined into few deltas.

On loopback the kernel buffers a few megabytes between server and client, so the reply here is
large (5 MB) and the client pauses long enough for those buffers to fill; past them, the server's
send waits, the reply's buffer fills from the model, and whatever accumulated goes out as one
delta when the client catches up. Nothing is lost or reordered on the way.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest

from tests.conftest import LiveServer
from tests.fakes.groq_server import FakeGroq, Scenario
from tests.support.api import Api, User

TOKENS = [f"<{i:05d}>" + "x" * 993 for i in range(5_000)]  # 1 kB each, 5 MB in all


@pytest.fixture(scope="module")
def server_settings() -> dict[str, Any]:
    return {"stream_max_output_chars": 10_000_000}


def _dechunk(data: bytes) -> bytes:
    out, position = bytearray(), 0
    while True:
        end = data.index(b"\r\n", position)
        size = int(data[position:end], 16)
        if size == 0:
            return bytes(out)
        out += data[end + 2 : end + 2 + size]
        position = end + 2 + size + 2


async def _stalling_sse_client(port: int, user: User, conversation_id: str) -> list[str]:
    """Reads the first bytes, stops reading for two seconds, then reads everything."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)  # its buffer stops at 128 kB
    body = json.dumps({"content": "a long answer, please"}).encode()
    writer.write(
        f"POST /api/v1/conversations/{conversation_id}/messages/stream HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Bearer {user.token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )
    raw = await reader.read(4096)
    await asyncio.sleep(2)
    while chunk := await reader.read(1 << 20):
        raw += chunk
    writer.close()
    head, _, chunked = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    return [
        json.loads(line[len("data: ") :])["delta"]["text"]
        for line in _dechunk(chunked).decode().split("\n")
        if line.startswith("data: ") and '"content_block_delta"' in line
    ]


async def test_a_slow_client_gets_fewer_larger_deltas_whose_concatenation_is_exact(
    api: Api, fake_groq: FakeGroq, server: LiveServer
) -> None:
    user = await api.register()
    conversation_id = str((await api.create_conversation(user))["id"])
    # 4,000 chunks a second from the model, one HTTP chunk each.
    fake_groq.enqueue(Scenario(tokens=TOKENS, token_interval=0.00025, honor_max_tokens=False))
    deltas = await _stalling_sse_client(server.port, user, conversation_id)

    assert "".join(deltas) == "".join(TOKENS)  # in order, nothing lost, nothing repeated
    assert len(deltas) < len(TOKENS) / 2
    # Far more than any coalescing window of a busy server joins: the client's stall did this.
    assert max(len(delta) for delta in deltas) >= 500 * len(TOKENS[0])
    rows = await api.messages(user, conversation_id)
    assert rows[-1]["content"] == "".join(TOKENS)
