"""The README is true: its "Try it" commands run as written against a live server (the echo
model, as `make run` has it without a GROQ_API_KEY), and the sample stream it shows is what they
print, numbers included (ids and latency stand in as <...>). Also: docs/CONTRACT.md is the
contract we were handed (../shared/CONTRACT.md, when it is there)."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LiveServer

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SHARED_CONTRACT = ROOT.parent / "shared" / "CONTRACT.md"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def server_settings() -> dict[str, Any]:
    # As `make run` has it: the echo model at its default pace (one delta per word).
    return {"llm_provider": "echo", "echo_token_delay_seconds": 0.02}


def section(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def code_blocks(text: str, language: str) -> list[str]:
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    return [code for lang, code in blocks if lang == language]


def placeholders(stream: str, message_id: str, conversation_id: str) -> str:
    stream = stream.replace(message_id, "<message id>").replace(
        conversation_id, "<conversation id>"
    )
    return re.sub(r'"latency_ms":\d+', '"latency_ms":<ms>', stream)


def matches(sample: list[str], real: list[str]) -> bool:
    """Whether the sample's frames are the real ones, a frame "…" standing for any number."""
    if not sample:
        return not real
    if sample[0] == "…":
        return any(matches(sample[1:], real[i:]) for i in range(len(real) + 1))
    return bool(real) and sample[0] == real[0] and matches(sample[1:], real[1:])


async def test_try_it_runs_as_written_and_prints_the_sample_stream(server: LiveServer) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    try_it = section("Try it")
    commands, sample = code_blocks(try_it, "bash")[0], code_blocks(try_it, "")[0]
    here = f"127.0.0.1:{server.port}"
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        commands.replace("localhost:8000", here),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    output = stdout.decode()

    start = output.index("event: message_start")
    end = output.index('data: {"type":"message_stop"}') + len('data: {"type":"message_stop"}')
    stream = output[start:end]
    message_id, conversation_id = (
        re.search(r'"id":"([^"]+)"', stream).group(1),  # type: ignore[union-attr]
        re.search(r'"conversation_id":"([^"]+)"', stream).group(1),  # type: ignore[union-attr]
    )
    assert _UUID.fullmatch(message_id) and _UUID.fullmatch(conversation_id)
    real = placeholders(stream, message_id, conversation_id).split("\n\n")
    shown = sample.strip().split("\n\n")
    assert matches(shown, real), "README's sample stream differs from a real run:\n" + "\n\n".join(
        real
    )
    assert any(frame == "…" for frame in shown)  # the sample elides the middle deltas, marked


def test_the_repository_carries_the_contract_it_was_handed() -> None:
    copy = ROOT / "docs" / "CONTRACT.md"
    assert copy.is_file()
    assert "](docs/CONTRACT.md)" in README.read_text(encoding="utf-8")
    assert "../shared/" not in README.read_text(encoding="utf-8")
    if not SHARED_CONTRACT.is_file():
        pytest.skip("../shared/CONTRACT.md is not beside this checkout")
    assert copy.read_text(encoding="utf-8") == SHARED_CONTRACT.read_text(encoding="utf-8"), (
        "docs/CONTRACT.md is behind ../shared/CONTRACT.md: copy it over"
    )
