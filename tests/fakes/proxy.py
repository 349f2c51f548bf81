"""A loopback HTTP forward proxy: `CONNECT` tunnels (for https:// targets) and absolute-form
requests (for http:// targets), recording what went through it.

    async with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        ...
        assert proxy.tunnels == ["localhost:8443"]
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


class ForwardProxy:
    def __init__(self) -> None:
        self.tunnels: list[str] = []  # CONNECT targets, host:port
        self.requests: list[str] = []  # absolute-form request targets
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> ForwardProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                self.tunnels.append(target)
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
                await _pipe_both(reader, writer, up_reader, up_writer)
                return
            # Absolute form: "POST http://host:port/path HTTP/1.1"; forward it unchanged but
            # for the target, which the origin wants in origin form.
            self.requests.append(target)
            parts = urlsplit(target)
            up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            first, rest = head.split(b"\r\n", 1)
            up_writer.write(first.replace(target.encode(), path.encode(), 1) + b"\r\n" + rest)
            await _pipe_both(reader, writer, up_reader, up_writer)
        except (OSError, asyncio.IncompleteReadError, ValueError, asyncio.LimitOverrunError):
            return
        except asyncio.CancelledError:
            return
        finally:
            self._handlers.discard(task)
            writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()  # one side gone: the tunnel is over


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    try:
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    finally:
        up_writer.transport.abort()
