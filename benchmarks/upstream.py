"""The benchmark's Groq: the test suite's fake (tests/fakes/groq_server.py), timestamped and paced.

    python -m benchmarks.upstream --port 8100 --api-key K --epoch 1763700000

Same HTTP server, auth check, wire format and error bodies as the tests' fake; only the streaming
answer differs. Each request's last user message is a `Directive` (see `benchmarks.wire`):

- `fast`: the whole reply in one write, from a body precomputed per length (the upstream costs
  nothing, so the API under test is the bottleneck). Tokens are `~0 `.
- `paced`: the first token `ftd` seconds after the request arrived, then one every `interval`.
  All paced streams share one timer (`Pacer`): each tick writes, per stream, every token that has
  come due, in one write, stamped with the time of that write. At Groq's 500 tokens/s and light
  load that is one token per write, like Groq; when this process falls behind it writes the
  backlog at once. Stamps are taken at the actual write, so the client's lag stays exact; how far
  the writes trailed the schedule is reported by `GET /bench/stats`.
- `silent`: the headers, then nothing until the client goes away (a model that never answers).

`GET /bench/stats` returns the counters as JSON; `POST /bench/stats` returns them and resets them.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import Sequence
from typing import Any

import orjson
import uvloop

from benchmarks.wire import UNTIMED_TOKEN, Directive, first_token_text, micros, token_text
from tests.fakes.groq_server import (
    DEFAULT_MODEL,
    FakeGroq,
    RecordedRequest,
    Scenario,
    _chunked,
    _ChunkEncoder,
    _Connection,
    _rough_prompt_tokens,
    _usage,
)

_END_OF_BODY = b"0\r\n\r\n"
_DONE = b"data: [DONE]\n\n"
_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream\r\n"
    b"cache-control: no-cache\r\n"
    b"connection: keep-alive\r\n"
    b"transfer-encoding: chunked\r\n"
    b"x-request-id: req_benchmark\r\n\r\n"
)
_LAG_BUCKETS_MS = 2000  # schedule-lag histogram: 1 ms buckets, the last one open-ended


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started = time.monotonic()
        self.requests = {"fast": 0, "paced": 0, "silent": 0, "other": 0}
        self.active = {"fast": 0, "paced": 0, "silent": 0}
        self.paced_writes = 0
        self.paced_tokens = 0
        self.ticks = 0
        self.schedule_lag = [0] * (_LAG_BUCKETS_MS + 1)

    def lag(self, seconds: float) -> None:
        self.schedule_lag[min(int(seconds * 1000), _LAG_BUCKETS_MS)] += 1

    def as_json(self) -> dict[str, Any]:
        total = sum(self.schedule_lag)

        def quantile(q: float) -> int | None:
            if not total:
                return None
            seen = 0
            for ms, count in enumerate(self.schedule_lag):
                seen += count
                if seen >= q * total:
                    return ms
            return _LAG_BUCKETS_MS

        return {
            "seconds": round(time.monotonic() - self.started, 3),
            "requests": self.requests,
            "active": self.active,
            "paced_writes": self.paced_writes,
            "paced_tokens": self.paced_tokens,
            "ticks": self.ticks,
            "tokens_per_write": round(self.paced_tokens / self.paced_writes, 2)
            if self.paced_writes
            else None,
            # How late writes were against the schedule (lower bound of a 1 ms bucket).
            "schedule_lag_ms": {"p50": quantile(0.5), "p99": quantile(0.99), "max": quantile(1.0)},
        }


class _PacedStream:
    __slots__ = (
        "arrival",
        "conn",
        "done",
        "due0",
        "encoder",
        "epoch",
        "interval",
        "prompt_tokens",
        "sent",
        "total",
    )

    def __init__(
        self,
        conn: _Connection,
        encoder: _ChunkEncoder,
        directive: Directive,
        total: int,
        arrival: float,
        epoch: float,
        now: float,
        prompt_tokens: int,
    ) -> None:
        self.conn = conn
        self.prompt_tokens = prompt_tokens
        self.encoder = encoder
        self.total = total
        self.interval = directive.interval
        self.due0 = now + directive.ftd  # time.monotonic() of token 0
        self.arrival = arrival
        self.epoch = epoch
        self.sent = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def pump(self, now: float, wall: float, stats: Stats) -> bool:
        """Write the tokens due by `now` (monotonic); True once the reply is complete."""
        if now < self.due0:
            return False
        due = self.total
        if self.interval > 0:
            due = min(self.total, int((now - self.due0) / self.interval) + 1)
        new = due - self.sent
        if new <= 0:
            return False
        stats.lag(now - (self.due0 + self.sent * self.interval))
        send_us = micros(self.epoch, wall)
        parts: list[bytes] = []
        repeat = new
        if self.sent == 0:
            first = first_token_text(micros(self.epoch, self.arrival), send_us)
            parts += (_chunked(self.encoder.role()), _chunked(self.encoder.content(first)))
            repeat -= 1
        if repeat:
            parts.append(_chunked(self.encoder.content(token_text(send_us))) * repeat)
        self.sent = due
        stats.paced_writes += 1
        stats.paced_tokens += new
        if due == self.total:
            parts.append(_final(self.encoder, self.total, self.prompt_tokens))
        self.conn.write(b"".join(parts))
        return due == self.total


def _final(encoder: _ChunkEncoder, completion_tokens: int, prompt_tokens: int) -> bytes:
    tail = encoder.final("stop", "x_groq", _usage(prompt_tokens, completion_tokens)) + _DONE
    return _chunked(tail) + _END_OF_BODY


class Pacer:
    """One timer for every paced stream."""

    def __init__(self, tick: float, stats: Stats) -> None:
        self.tick = tick
        self.stats = stats
        self.streams: set[_PacedStream] = set()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, stream: _PacedStream) -> None:
        self.streams.add(stream)
        self._wakeup.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pacer")

    async def _run(self) -> None:
        stats = self.stats
        while True:
            if not self.streams:
                self._wakeup.clear()
                await self._wakeup.wait()
            now, wall = time.monotonic(), time.time()  # uvloop's loop.time() counts whole ms
            stats.ticks += 1
            for stream in list(self.streams):
                try:
                    finished = stream.pump(now, wall, stats)
                except Exception as error:  # the client went away mid-write; others go on
                    self.streams.discard(stream)
                    if not stream.done.done():
                        stream.done.set_exception(error)
                    continue
                if finished:
                    self.streams.discard(stream)
                    if not stream.done.done():
                        stream.done.set_result(None)
            await asyncio.sleep(self.tick)


class BenchGroq(FakeGroq):
    """The tests' fake with the benchmark's streaming modes and a stats endpoint."""

    def __init__(self, *, epoch: float, tick: float, **kwargs: Any) -> None:
        super().__init__(record_requests=False, **kwargs)
        self.epoch = epoch
        self.stats = Stats()
        self.pacer = Pacer(tick, self.stats)
        self._fast_bodies: dict[tuple[str, int], bytes] = {}

    async def _respond(self, conn: _Connection, record: RecordedRequest) -> bool:
        if record.path.startswith("/bench/stats"):
            stats = self.stats.as_json()
            if record.method == "POST":
                self.stats.reset()
            await self._write_json(conn, record, 200, stats, [])
            return True
        return await super()._respond(conn, record)

    async def _stream(self, conn: _Connection, record: RecordedRequest, scenario: Scenario) -> bool:
        # When the request was read (the base class stamps it on the monotonic clock).
        arrival = time.time() - (time.monotonic() - record.started_at)
        body: dict[str, Any] = record.body
        directive = _directive(body)
        if directive is None:
            self.stats.requests["other"] += 1
            return await super()._stream(conn, record, scenario)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        total = min(directive.tokens, limit) if isinstance(limit, int) else directive.tokens
        model = str(body.get("model", DEFAULT_MODEL))
        mode = directive.mode
        self.stats.requests[mode] += 1
        self.stats.active[mode] += 1
        try:
            if mode == "fast":
                tail = _final(_encoder(model), total, _rough_prompt_tokens(body))
                conn.write(self._fast_body(model, total) + tail)
                await conn.drain()
            elif mode == "silent":
                conn.write(_HEAD)
                await conn.drain()
                await asyncio.Event().wait()  # until the client leaves (the caller cancels us)
            else:
                conn.write(_HEAD)
                stream = _PacedStream(
                    conn,
                    _encoder(model),
                    directive,
                    total,
                    arrival,
                    self.epoch,
                    time.monotonic() - (time.time() - arrival),
                    _rough_prompt_tokens(body),
                )
                self.pacer.add(stream)
                try:
                    await stream.done
                finally:
                    self.pacer.streams.discard(stream)
                await conn.drain()
        finally:
            self.stats.active[mode] -= 1
        return True

    def _fast_body(self, model: str, total: int) -> bytes:
        body = self._fast_bodies.get((model, total))
        if body is None:
            encoder = _encoder(model)
            event = _chunked(encoder.content(UNTIMED_TOKEN))
            body = _HEAD + _chunked(encoder.role()) + event * total
            self._fast_bodies[(model, total)] = body
        return body


def _encoder(model: str) -> _ChunkEncoder:
    return _ChunkEncoder(model, "req_benchmark")


def _directive(body: dict[str, Any]) -> Directive | None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    content = messages[-1].get("content") if isinstance(messages[-1], dict) else None
    return Directive.parse(content) if isinstance(content, str) else None


async def _serve(args: argparse.Namespace) -> None:
    fake = BenchGroq(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        epoch=args.epoch,
        tick=args.tick,
        default_scenario=Scenario(n_tokens=8),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with fake:
        print(f"benchmark upstream listening on {fake.base_url}", flush=True)
        await stop.wait()
    print(orjson.dumps({"requests": fake.request_count}).decode(), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--epoch", type=float, required=True, help="time.time() of token 0 µs")
    parser.add_argument("--tick", type=float, default=0.002, help="pacer period, seconds")
    uvloop.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
