"""Closed-loop load: N lanes, each streaming reply after reply, measured over a fixed window.

A lane is one connection (SSE keep-alive or one websocket) and one user's conversations; it starts
the next reply as soon as the previous one ends ("new streams started as old ones finish"). Lanes
start staggered so they do not move in lockstep. After a warm-up the window opens: counters and
CPU times are snapshotted at both ends, so the figures are steady-state rates, free of ramp-up and
drain. Lags and TTFT samples are kept only for tokens received / replies started in the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from benchmarks.clients import ClientError, Meter, SSEClient, StreamState, WSClient
from benchmarks.procs import CpuProbe, Pinning
from benchmarks.wire import GRAPHQL_TRANSPORT_WS, Directive

# What a typical client selects: everything but the full reply text at the end (it has the deltas).
SUBSCRIPTION = """
subscription Stream($conversationId: ID!, $content: String!, $maxTokens: Int) {
  streamMessage(conversationId: $conversationId, content: $content, maxTokens: $maxTokens) {
    __typename type messageId
    ... on MessageStartEvent {
      message { id role model conversationId finishReason }
      usage { inputTokens outputTokens }
    }
    ... on ContentBlockDeltaEvent { index delta { type text } }
    ... on MessageDeltaEvent {
      delta { stopReason stopSequence } usage { inputTokens outputTokens } latencyMs
    }
    ... on MessageStopEvent { message { id finishReason tokenCount latencyMs model } }
  }
}
"""


@dataclass(frozen=True)
class Endpoint:
    name: str  # e.g. "app-sse", "bare-ws"
    transport: Literal["sse", "ws"]
    port: int
    path: str  # SSE: may contain "{conversation}"; websocket: the upgrade path
    host: str = "127.0.0.1"
    # SSE request body: the API's stream request, or a chat completion request (straight to
    # the upstream fake, to see what the load side alone sustains).
    body: Literal["api", "chat"] = "api"


@dataclass(frozen=True)
class Lane:
    token: str | None
    conversations: tuple[str, ...]


class Session:
    """A lane's connection to an endpoint."""

    def __init__(self, endpoint: Endpoint, client: SSEClient | WSClient, token: str | None):
        self.endpoint = endpoint
        self.client = client
        self.token = token
        self.op: str | None = None

    @classmethod
    async def open(cls, endpoint: Endpoint, token: str | None, meter: Meter) -> Session:
        if endpoint.transport == "sse":
            sse = await SSEClient.connect(meter, endpoint.host, endpoint.port)
            return cls(endpoint, sse, token)
        ws = await WSClient.connect(
            meter, endpoint.host, endpoint.port, endpoint.path, GRAPHQL_TRANSPORT_WS
        )
        try:
            await ws.init({"Authorization": f"Bearer {token}"} if token else {})
        except BaseException:
            ws.close()
            raise
        return cls(endpoint, ws, token)

    @property
    def usable(self) -> bool:
        return self.client.usable

    async def stream(
        self,
        conversation: str,
        directive: Directive,
        state: StreamState,
        *,
        until_done: bool = True,
    ) -> None:
        content = directive.render()
        if isinstance(self.client, SSEClient):
            if self.endpoint.body == "chat":
                request = {
                    "model": "llama-3.1-8b-instant",
                    "messages": [{"role": "user", "content": content}],
                    "max_completion_tokens": directive.tokens,
                    "stream": True,
                }
            else:
                request = {"content": content, "max_tokens": directive.tokens}
            body = orjson.dumps(request)
            path = self.endpoint.path.format(conversation=conversation)
            await self.client.stream(path, self.token, body, state)
            return
        variables = {
            "conversationId": conversation,
            "content": content,
            "maxTokens": directive.tokens,
        }
        self.op = await self.client.subscribe(SUBSCRIPTION, variables, state, until_done=until_done)

    def cancel(self) -> None:
        if isinstance(self.client, WSClient) and self.op is not None:
            self.client.complete(self.op)

    def close(self) -> None:
        self.client.close()


def assign_lanes(accounts: Sequence[tuple[str, Sequence[str]]], count: int) -> list[Lane]:
    """`count` lanes over the accounts, at most two lanes per user and never a shared
    conversation (a conversation streams one reply at a time)."""
    users = len(accounts)
    if count > 2 * users:
        raise ValueError(f"{count} lanes need at least {math.ceil(count / 2)} users")
    lanes = []
    for index in range(count):
        token, conversations = accounts[index % users]
        if count > users:  # two lanes share this user: split its conversations
            conversations = conversations[index // users :: 2]
        lanes.append(Lane(token, tuple(conversations)))
    return lanes


def anonymous_lanes(count: int) -> list[Lane]:
    return [Lane(None, ("bare",)) for _ in range(count)]


class Profiler:
    """py-spy recording the server during a window (on the load core, as our child)."""

    def __init__(self, pid: int, directory: Path, fmt: str, rate: int = 200) -> None:
        self.pid = pid
        self.directory = directory
        self.fmt = fmt
        self.rate = rate
        self.process: asyncio.subprocess.Process | None = None
        self.output: Path | None = None

    async def start(self, name: str, duration: float) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        suffix = {"flamegraph": "svg", "speedscope": "speedscope.json"}.get(self.fmt, "txt")
        self.output = self.directory / f"{name.replace('/', '-')}.{suffix}"
        self.process = await asyncio.create_subprocess_exec(
            _py_spy(), "record", "--pid", str(self.pid), "--duration", str(max(1, round(duration))),
            "--rate", str(self.rate), "--format", self.fmt, "--output", str(self.output),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

    async def finish(self) -> str | None:
        if self.process is None:
            return None
        _, stderr = await self.process.communicate()
        if self.process.returncode != 0:
            return f"py-spy failed: {stderr.decode(errors='replace')[-300:]}"
        return str(self.output)


def _py_spy() -> str:
    """The py-spy installed next to this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy") or "py-spy"


@dataclass
class LoopSettings:
    warmup: float
    duration: float
    # ... and then until this many replies have ended, well or not (a closed loop is in its
    # steady state once every lane has finished one), for at most `warmup_max` seconds in all.
    warmup_streams: int = 0
    warmup_max: float = 30.0
    stagger: float = 0.0  # lanes start spread over this many seconds
    stream_timeout: float = 60.0
    drain_timeout: float = 15.0
    retry_pause: float = 0.05


async def _lane(
    endpoint: Endpoint,
    lane: Lane,
    directive: Directive,
    meter: Meter,
    stop: asyncio.Event,
    delay: float,
    settings: LoopSettings,
    turns: list[int],
    slot: int,
) -> None:
    await asyncio.sleep(delay)
    session: Session | None = None
    try:
        while not stop.is_set():
            if session is None or not session.usable:
                try:
                    session = await asyncio.wait_for(
                        Session.open(endpoint, lane.token, meter), settings.stream_timeout
                    )
                except (OSError, ClientError, TimeoutError) as error:
                    meter.errors[f"connect: {type(error).__name__}: {error}"[:160]] += 1
                    session = None
                    await asyncio.sleep(settings.retry_pause)
                    continue
            conversation = lane.conversations[turns[slot] % len(lane.conversations)]
            turns[slot] += 1
            state = StreamState(expected=directive.tokens)
            try:
                async with asyncio.timeout(settings.stream_timeout):
                    await session.stream(conversation, directive, state)
            except TimeoutError:
                state.fail("timeout")
                session.close()
            except ClientError as error:
                state.fail(str(error))
            if meter.settle(state) != "ok":
                await asyncio.sleep(settings.retry_pause)
    finally:
        if session is not None:
            session.close()


async def closed_loop(
    endpoint: Endpoint,
    lanes: Sequence[Lane],
    directive: Directive,
    meter: Meter,
    settings: LoopSettings,
    probe: CpuProbe,
    pinning: Pinning,
    profiler: tuple[Profiler, str] | None = None,
) -> dict[str, Any]:
    stop = asyncio.Event()
    turns = [0] * len(lanes)
    count = max(1, len(lanes))
    tasks = [
        asyncio.create_task(
            _lane(
                endpoint,
                lane,
                directive,
                meter,
                stop,
                settings.stagger * index / count,
                settings,
                turns,
                index,
            )
        )
        for index, lane in enumerate(lanes)
    ]
    try:
        started = time.monotonic()
        await asyncio.sleep(settings.warmup)
        while (  # noqa: ASYNC110  (polling a counter the protocols bump; 50 ms is plenty)
            meter.streams_ok + sum(meter.errors.values()) < settings.warmup_streams
            and time.monotonic() - started < settings.warmup_max
        ):
            await asyncio.sleep(0.05)
        warmup = time.monotonic() - started
        result = await measure_window(meter, settings.duration, probe, pinning, profiler)
        result["warmup_seconds"] = round(warmup, 2)
    finally:
        stop.set()
        _, pending = await asyncio.wait(tasks, timeout=settings.drain_timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    result["unfinished_at_stop"] = len(pending)
    result["lanes"] = len(lanes)
    result["max_conversation_uses"] = max(
        (math.ceil(t / len(lane.conversations)) for t, lane in zip(turns, lanes, strict=True)),
        default=0,
    )
    result["errors_total"] = dict(meter.errors)
    return result


async def measure_window(
    meter: Meter,
    duration: float,
    probe: CpuProbe,
    pinning: Pinning,
    profiler: tuple[Profiler, str] | None = None,
) -> dict[str, Any]:
    """Open the meter's window for `duration` seconds; counters and CPU over exactly that time."""
    if profiler is not None:
        await profiler[0].start(profiler[1], duration)
    before_counts = (meter.tokens, meter.frames, meter.streams_ok, sum(meter.errors.values()))
    before = probe.snapshot()
    meter.window_start, meter.window_open = time.time(), True
    canary = asyncio.create_task(_loop_delays(duration))
    await asyncio.sleep(duration)
    meter.window_open, meter.window_end = False, time.time()
    after = probe.snapshot()
    delays = await canary
    after_counts = (meter.tokens, meter.frames, meter.streams_ok, sum(meter.errors.values()))
    tokens, frames, ok, errors = (a - b for a, b in zip(after_counts, before_counts, strict=True))
    cpu = CpuProbe.usage(before, after, pinning)
    wall = cpu["wall_seconds"]
    server_cpu = cpu["cpu_seconds"].get("server", 0.0)
    result: dict[str, Any] = {
        "window_seconds": wall,
        "tokens": tokens,
        "frames": frames,
        "streams_ok": ok,
        "errors": errors,
        "tokens_per_second": round(tokens / wall, 1),
        "frames_per_second": round(frames / wall, 1),
        "streams_per_second": round(ok / wall, 2),
        "tokens_per_frame": round(tokens / frames, 2) if frames else None,
        "server_cpu_seconds": server_cpu,
        "tokens_per_server_cpu_second": round(tokens / server_cpu, 1) if server_cpu else None,
        "server_cpu_ms_per_stream": round(server_cpu * 1000 / ok, 3) if ok else None,
        "cpu": cpu,
        # How late this process's event loop woke up: large values mean the load side (or the
        # machine) was too busy to read promptly, and lags include that.
        "load_loop_delay_ms": {
            "p50": _round(quantile(delays, 0.5)),
            "p99": _round(quantile(delays, 0.99)),
            "max": _round(delays[-1] if delays else None),
        },
    }
    if profiler is not None:
        result["profile"] = await profiler[0].finish()
    return result


async def _loop_delays(duration: float, period: float = 0.005) -> list[float]:
    """Oversleep of a 5 ms timer in this process, in ms, sorted (uvloop's clock and timers
    have 1 ms resolution, so up to ~1 ms is the timer itself)."""
    end = time.monotonic() + duration
    delays = []
    while (now := time.monotonic()) < end:
        await asyncio.sleep(period)
        delays.append((time.monotonic() - now - period) * 1000)
    return sorted(delays)


def quantile(ordered: Sequence[float], q: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def lag_summary(meter: Meter) -> dict[str, Any]:
    lags = sorted(meter.lags_us)
    if not lags:
        return {"tokens": 0}
    ms = [value / 1000 for value in lags]
    edges = [0.0] + [round(0.1 * 10 ** (i / 10), 3) for i in range(51)]  # 0.1 ms .. 10 s
    histogram = [0] * len(edges)
    position = 0
    for index, edge in enumerate(edges[1:], start=1):
        start = position
        while position < len(ms) and ms[position] < edge:
            position += 1
        histogram[index - 1] = position - start
    histogram[-1] = len(ms) - position
    return {
        "tokens": len(ms),
        "p50_ms": round(quantile(ms, 0.5) or 0, 3),
        "p90_ms": round(quantile(ms, 0.9) or 0, 3),
        "p99_ms": round(quantile(ms, 0.99) or 0, 3),
        "p999_ms": round(quantile(ms, 0.999) or 0, 3),
        "max_ms": round(ms[-1], 3),
        "min_ms": round(ms[0], 3),
        "histogram_edges_ms": edges,
        "histogram_counts": histogram,
    }


def ttft_summary(meter: Meter) -> dict[str, Any]:
    samples = meter.ttft
    if not samples:
        return {"samples": 0}

    def stats(values: list[float]) -> dict[str, float | None]:
        ordered = sorted(values)
        return {
            "p50": _round(quantile(ordered, 0.5)),
            "p90": _round(quantile(ordered, 0.9)),
            "p99": _round(quantile(ordered, 0.99)),
            "max": _round(ordered[-1]),
            "mean": _round(sum(ordered) / len(ordered)),
        }

    added, client, before, after = (list(column) for column in zip(*samples, strict=True))
    return {
        "samples": len(samples),
        "reply_ms": stats(meter.stream_ms),  # request sent -> last event, client-observed
        "added_ms": stats(added),
        "client_ttft_ms": stats(client),
        "before_upstream_ms": stats(before),
        "after_upstream_ms": stats(after),
        "added_ms_raw": [round(value, 3) for value in added],
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def settle(probe: CpuProbe, *, below: float = 0.05, timeout: float = 15.0) -> float:
    """Wait until the server is idle (finishing replies, checkpoints); returns seconds waited."""
    start = time.monotonic()
    calm = 0
    while time.monotonic() - start < timeout:
        before = probe.snapshot()
        await asyncio.sleep(0.25)
        after = probe.snapshot()
        used = after.processes.get("server", 0.0) - before.processes.get("server", 0.0)
        calm = calm + 1 if used / (after.at - before.at) < below else 0
        if calm >= 2:
            break
    return round(time.monotonic() - start, 2)


async def open_subscriptions(
    endpoint: Endpoint,
    lanes: Sequence[Lane],
    directive: Directive,
    meter: Meter,
    concurrency: int,
) -> list[tuple[Session, StreamState]]:
    """One websocket per lane with one subscription that has started (message_start seen)."""
    opened: list[tuple[Session, StreamState]] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(lane: Lane) -> None:
        async with gate:
            try:
                session = await asyncio.wait_for(Session.open(endpoint, lane.token, meter), 60)
            except (OSError, ClientError, TimeoutError) as error:
                meter.errors[f"connect: {type(error).__name__}"] += 1
                return
            state = StreamState(expected=directive.tokens)
            try:
                await asyncio.wait_for(
                    session.stream(lane.conversations[0], directive, state, until_done=False), 60
                )
            except (ClientError, TimeoutError) as error:
                state.fail(str(error) or type(error).__name__)
            if state.error or not state.started:
                meter.errors[state.error or "no message_start"] += 1
                session.close()
                return
            opened.append((session, state))

    await asyncio.gather(*(one(lane) for lane in lanes))
    return opened


def close_sessions(sessions: Sequence[tuple[Session, StreamState]]) -> None:
    for session, _ in sessions:
        with contextlib.suppress(ClientError, RuntimeError):
            session.cancel()
        session.close()
