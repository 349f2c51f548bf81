"""The reply pipeline's buffer: a consumer that falls behind gets what piled up, joined, exactly."""

from __future__ import annotations

import asyncio

from app.config import Settings
from app.llm.base import ChatMessage, ChatRequest
from app.llm.echo import EchoProvider, echo_reply
from app.streaming.load import LoopLag
from app.streaming.service import _Pump

REQUEST = ChatRequest(
    model="echo",
    messages=[ChatMessage("user", " ".join(f"word{i}" for i in range(120)))],
    max_tokens=8_000,
)


async def consume(delay: float) -> list[str]:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    pump = _Pump(
        EchoProvider(token_delay_seconds=0.001), REQUEST, settings, LoopLag(active=lambda: False)
    )
    pump.start()
    deltas = []
    while (text := await pump.next_text()) is not None:
        deltas.append(text)
        await asyncio.sleep(delay)  # a client that takes this long to take each delta
    return deltas


async def test_a_slow_consumer_gets_fewer_larger_deltas_with_the_exact_text() -> None:
    expected = echo_reply(REQUEST)
    keeping_up = await consume(0)
    falling_behind = await consume(0.03)
    assert "".join(keeping_up) == "".join(falling_behind) == expected
    assert len(keeping_up) > 100  # one word per delta, as they come
    assert len(falling_behind) < len(keeping_up) / 5
    assert max(len(delta.split()) for delta in falling_behind) > 10
