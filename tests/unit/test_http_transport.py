"""The buffered HTTP/1.1 transport against a raw server that sends exactly the given bytes."""

from __future__ import annotations

import asyncio
import random
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from app.llm.http import BufferedTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + (await reader.readexactly(length) if length else b"")


class RawServer:
    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.connections = 0
        self.ssl = ssl_context
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if self.ssl else 'http'}://127.0.0.1:{port}/v1/path"


def chunked(*pieces: bytes) -> bytes:
    body = b"".join(b"%x\r\n%b\r\n" % (len(piece), piece) for piece in pieces)
    return body + b"0\r\n\r\n"


def response(body: bytes, *headers: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


async def send_in_pieces(writer: asyncio.StreamWriter, data: bytes, cuts: list[int]) -> None:
    previous = 0
    for cut in [*sorted(cuts), len(data)]:
        writer.write(data[previous:cut])
        await writer.drain()
        await asyncio.sleep(0)
        previous = cut


async def collect(client: httpx.AsyncClient, url: str) -> tuple[int, list[bytes]]:
    async with client.stream("POST", url, json={"q": 1}) as reply:
        pieces = [piece async for piece in reply.aiter_raw()]
        return reply.status_code, pieces


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=BufferedTransport(max_connections=4), timeout=httpx.Timeout(2.0)
    ) as http:
        yield http


async def test_chunked_bodies_decode_exactly_however_the_bytes_are_split(
    client: httpx.AsyncClient,
) -> None:
    pieces = [b"data: " + bytes([65 + i % 26]) * (i % 7 + 1) + b"\n\n" for i in range(40)]
    raw = response(chunked(*pieces), b"Transfer-Encoding: chunked")
    rng = random.Random(7)
    splits = [rng.sample(range(1, len(raw)), k) for k in (0, 1, 5, 40, len(raw) - 1)]
    for cuts in splits:

        async def handler(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, cuts: list[int] = cuts
        ) -> None:
            await read_request(reader)
            await send_in_pieces(writer, raw, cuts)
            await reader.read()

        async with RawServer(handler) as server:
            status, received = await collect(client, server.url)
        assert status == 200
        assert b"".join(received) == b"".join(pieces), cuts


async def test_everything_buffered_comes_out_in_one_piece(client: httpx.AsyncClient) -> None:
    pieces = [b"token %d\n" % i for i in range(500)]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response(chunked(*pieces), b"Transfer-Encoding: chunked"))
        await writer.drain()
        await reader.read()

    async with RawServer(handler) as server:
        _, received = await collect(client, server.url)
    assert b"".join(received) == b"".join(pieces)
    assert len(received) < 10  # 500 HTTP chunks, a handful of reads


async def test_keep_alive_reuses_the_connection(client: httpx.AsyncClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for n in range(3):
            request = await read_request(reader)
            assert request.startswith(b"POST /v1/path HTTP/1.1\r\n")
            assert b'{"q":1}' in request
            writer.write(response(chunked(b"reply %d" % n), b"Transfer-Encoding: chunked"))
            await writer.drain()
        await reader.read()

    async with RawServer(handler) as server:
        bodies = [b"".join((await collect(client, server.url))[1]) for _ in range(3)]
        assert bodies == [b"reply 0", b"reply 1", b"reply 2"]
        assert server.connections == 1


async def test_content_length_and_close_delimited_bodies(client: httpx.AsyncClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            response(b'{"ok":true}', b"Content-Length: 11", b"Content-Type: application/json")
        )
        await writer.drain()
        await read_request(reader)
        writer.write(response(b"until the end", b"Connection: close"))
        await writer.drain()

    async with RawServer(handler) as server:
        first = await client.post(server.url, json={"q": 1})
        assert first.json() == {"ok": True}
        assert first.headers["content-type"] == "application/json"
        second = await client.post(server.url, json={"q": 1})
        assert second.content == b"until the end"
        assert server.connections == 1


async def test_an_unfinished_body_closes_the_connection(client: httpx.AsyncClient) -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"5\r\nfirst\r\n")
        await writer.drain()
        await reader.read()  # returns when the client closes
        closed.set()

    async with RawServer(handler) as server:
        async with client.stream("POST", server.url, json={}) as reply:
            async for piece in reply.aiter_raw():
                assert piece == b"first"
                break
        await asyncio.wait_for(closed.wait(), 1)


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n",
            httpx.RemoteProtocolError,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc",
            httpx.RemoteProtocolError,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", httpx.RemoteProtocolError),
        (b"garbage\r\n\r\n", httpx.RemoteProtocolError),
        (b"HTTP/1.1 200 OK\r\nbad header line\r\n\r\n", httpx.RemoteProtocolError),
        (b"", httpx.RemoteProtocolError),
    ],
)
async def test_broken_responses_raise_httpx_errors(
    client: httpx.AsyncClient, payload: bytes, error: type[Exception]
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(payload)
        await writer.drain()

    async with RawServer(handler) as server:
        with pytest.raises(error):
            await client.post(server.url, json={})


async def test_silence_is_a_read_timeout(client: httpx.AsyncClient) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await writer.drain()
        await reader.read()

    async def read_all(url: str) -> None:
        async with client.stream("POST", url, json={}, timeout=0.3) as reply:
            async for _ in reply.aiter_raw():
                pass

    async with RawServer(handler) as server:
        with pytest.raises(httpx.ReadTimeout):
            await read_all(server.url)


async def test_refused_connection_and_interim_responses(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ConnectError):
        await client.post("http://127.0.0.1:1/x", json={})

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + response(b"ok", b"Content-Length: 2"))
        await writer.drain()
        await reader.read()

    async with RawServer(handler) as server:
        assert (await client.post(server.url, json={})).content == b"ok"


async def test_the_pool_limits_connections_and_times_out_waiting() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"2\r\nok\r\n0\r\n\r\n")
        await writer.drain()
        await reader.read()

    timeout = httpx.Timeout(2.0, pool=0.2)
    async with (
        httpx.AsyncClient(transport=BufferedTransport(max_connections=1), timeout=timeout) as http,
        RawServer(handler) as server,
    ):
        first = asyncio.create_task(collect(http, server.url))
        await asyncio.sleep(0.05)
        with pytest.raises(httpx.PoolTimeout):
            await http.post(server.url, json={})
        release.set()
        assert b"".join((await first)[1]) == b"ok"
        assert server.connections == 1


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_https_with_certificate_verification(tmp_path: Path) -> None:
    cert, key = await asyncio.to_thread(_self_signed, tmp_path)
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(response(chunked(b"secure"), b"Transfer-Encoding: chunked"))
        await writer.drain()
        await reader.read()

    trusting = ssl.create_default_context(cafile=str(cert))
    async with RawServer(handler, ssl_context=server_ssl) as server:
        transport = BufferedTransport(max_connections=2, ssl_context=trusting)
        async with httpx.AsyncClient(transport=transport, timeout=2) as http:
            assert b"".join((await collect(http, server.url))[1]) == b"secure"
        # A certificate the client does not trust is refused.
        async with httpx.AsyncClient(
            transport=BufferedTransport(max_connections=2), timeout=2
        ) as http:
            with pytest.raises(httpx.ConnectError):
                await http.post(server.url, json={})


def test_works_on_uvloop() -> None:
    """Production serves on uvloop, whose transports are not asyncio.Transport subclasses."""
    uvloop = pytest.importorskip("uvloop")
    pieces = [b"piece %d|" % i for i in range(50)]

    async def scenario() -> bytes:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(response(chunked(*pieces), b"Transfer-Encoding: chunked"))
            await writer.drain()
            await reader.read()

        async with (
            RawServer(handler) as server,
            httpx.AsyncClient(transport=BufferedTransport(max_connections=2)) as http,
        ):
            return b"".join((await collect(http, server.url))[1])

    assert uvloop.run(scenario()) == b"".join(pieces)
