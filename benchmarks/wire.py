"""What every benchmark process agrees on: the token format, the directive, websocket frames.

Tokens. Every content token the benchmark's upstream sends is `~<hex> `, where hex is the send time
in microseconds since the run's epoch (`time.time()` on this host). A client counts tokens by
counting `~` in the bytes it receives (no JSON decoding) and, when it measures lag, reads each
token's send time out of the text itself: lag is exact per token even when the server joins many
tokens into one delta. The first token of a reply is prefixed with `^<hex>`, the time the upstream
received the request, so the API's added time to first token is known exactly too. Upstreams that
stream "as fast as possible" and the bare endpoints send `~0 ` (no time: only counted).

Directives. The load generator tells the upstream (and the bare endpoints) how to answer in the
message content itself: `bench mode=paced tokens=300 ftd=0.1 interval=0.002`. One upstream process
then serves every scenario, and the directive is visible in each stored user message.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Literal

TOKEN_MARK = b"~"
TOKEN_TIMES = re.compile(rb"~([0-9a-f]+)")
ARRIVAL_TIME = re.compile(rb"\^([0-9a-f]+)")
UNTIMED_TOKEN = "~0 "  # noqa: S105  (a model token, not a secret)
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
GRAPHQL_TRANSPORT_WS = "graphql-transport-ws"

Mode = Literal["fast", "paced", "silent"]
_MODES: dict[str, Mode] = {"fast": "fast", "paced": "paced", "silent": "silent"}


def micros(epoch: float, at: float) -> int:
    return int((at - epoch) * 1_000_000)


def token_text(send_us: int) -> str:
    return f"~{send_us:x} "


def first_token_text(arrival_us: int, send_us: int) -> str:
    return f"^{arrival_us:x}~{send_us:x} "


@dataclass(frozen=True, slots=True)
class Directive:
    """How the upstream answers one request (parsed from the last user message)."""

    mode: Mode = "fast"
    tokens: int = 50
    ftd: float = 0.0  # first-token delay, seconds after the request arrived
    interval: float = 0.0  # seconds between tokens (paced mode)

    PREFIX = "bench "

    def render(self) -> str:
        return (
            f"{self.PREFIX}mode={self.mode} tokens={self.tokens} "
            f"ftd={self.ftd:g} interval={self.interval:g}"
        )

    @classmethod
    def parse(cls, text: str) -> Directive | None:
        if not text.startswith(cls.PREFIX):
            return None
        values = dict(part.split("=", 1) for part in text[len(cls.PREFIX) :].split() if "=" in part)
        mode = _MODES.get(values.get("mode", "fast"))
        if mode is None:
            return None
        return cls(
            mode=mode,
            tokens=int(values.get("tokens", "50")),
            ftd=float(values.get("ftd", "0")),
            interval=float(values.get("interval", "0")),
        )

    @property
    def duration(self) -> float:
        """Seconds the upstream takes to send the whole reply (paced mode)."""
        return self.ftd + self.tokens * self.interval


# --- websocket frames (RFC 6455), only what a benchmark needs ---

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def ws_accept(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())  # noqa: S324  (RFC 6455)


def ws_key() -> bytes:
    return base64.b64encode(os.urandom(16))


def ws_frame(payload: bytes, opcode: int = OP_TEXT, *, mask: bool = False) -> bytes:
    """One final frame. Clients must mask (RFC 6455 5.3); servers must not."""
    length = len(payload)
    head = bytes([0x80 | opcode])
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 1 << 16:
        head += bytes([mask_bit | 126]) + length.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | 127]) + length.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + unmask(payload, key)


def unmask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return payload
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return masked.to_bytes(len(payload), "big")


class FrameReader:
    """Splits a byte stream into (opcode, payload) messages; joins fragmented ones."""

    __slots__ = ("_buffer", "_fragments", "_opcode")

    def __init__(self) -> None:
        self._buffer = b""
        self._fragments: list[bytes] = []
        self._opcode = 0

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer + data if self._buffer else data
        messages: list[tuple[int, bytes]] = []
        pos, end = 0, len(buffer)
        while end - pos >= 2:
            b0, b1 = buffer[pos], buffer[pos + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), 10
            key = b""
            if b1 & 0x80:
                if end - pos < head + 4:
                    break
                key = buffer[pos + head : pos + head + 4]
                head += 4
            stop = pos + head + length
            if stop > end:
                break
            payload = buffer[pos + head : stop]
            if key:
                payload = unmask(payload, key)
            pos = stop
            opcode, final = b0 & 0x0F, b0 & 0x80
            if opcode == OP_CONTINUATION or not final:
                if opcode != OP_CONTINUATION:
                    self._opcode = opcode
                self._fragments.append(payload)
                if not final:
                    continue
                opcode, payload = self._opcode, b"".join(self._fragments)
                self._fragments = []
            messages.append((opcode, payload))
        self._buffer = buffer[pos:]
        return messages


def http_head(head: bytes) -> tuple[int, dict[bytes, bytes]]:
    """Status code (or 0 for a request) and lower-cased headers of an HTTP/1.1 head."""
    first, *lines = head.split(b"\r\n")
    status = 0
    if first.startswith(b"HTTP/"):
        status = int(first.split(b" ", 2)[1])
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def chunked(payload: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(payload), payload)


CHUNKED_END = b"0\r\n\r\n"
