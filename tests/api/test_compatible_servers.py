"""OpenAI-compatible servers configured as docs/providers.md says (OPENAI_BASE_URL and a model in
MODELS_FILE), and which models a server offers: each streams end to end through a live server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Database, base_settings, start_server, stop_server
from tests.fakes.groq_server import FakeGroq
from tests.fakes.openai_server import FakeOpenAI, Flavor
from tests.fakes.upstream import Scenario
from tests.support.api import Api
from tests.support.streams import transports, wait_until

LOCAL_MODEL = "llama3.2:3b"
MODELS_TOML = f"""
[models."{LOCAL_MODEL}"]
provider = "openai"
context_window = 8192
max_output_tokens = 2048
input_price_per_million = 0
output_price_per_million = 0
"""


@asynccontextmanager
async def live(
    database: Database, fake_groq: FakeGroq, data_dir: Path, **overrides: Any
) -> AsyncIterator[Api]:
    server, uv_server, task = await start_server(
        base_settings(database, fake_groq, data_dir, **overrides)
    )
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            yield Api(http, server.ws_url)
    finally:
        await stop_server(uv_server, task)


@pytest.mark.parametrize("flavor", ["ollama", "vllm", "llamacpp"])
@pytest.mark.parametrize("transport", ["sse", "graphql-transport-ws"])
async def test_a_local_model_on_a_compatible_server_streams_end_to_end(
    database: Database, fake_groq: FakeGroq, tmp_path: Path, flavor: Flavor, transport: str
) -> None:
    models_file = tmp_path / "models.toml"
    models_file.write_text(MODELS_TOML)
    async with (
        FakeOpenAI(flavor=flavor, api_key=None) as fake,
        live(
            database,
            fake_groq,
            tmp_path,
            llm_provider="openai",
            openai_base_url=f"{fake.base_url}/v1",  # no OPENAI_API_KEY: none is needed
            models_file=models_file,
            default_model=LOCAL_MODEL,
        ) as api,
    ):
        user = await api.register()
        conversation = await api.create_conversation(user)
        assert conversation["model"] == LOCAL_MODEL
        fake.enqueue(Scenario(tokens=["Local", " and", " free."], prompt_tokens=9))

        result = await transports(api.http, api.ws_url)[transport].stream(
            user, str(conversation["id"]), "Hi", max_tokens=64
        )

        assert result.error is None, result.error
        assert result.text == "Local and free."
        [upstream] = fake.requests
        assert upstream.body["model"] == LOCAL_MODEL
        assert upstream.body["max_tokens"] == 64  # the field these servers read

        async def finished() -> bool:
            rows = await api.messages(user, str(conversation["id"]))
            return rows[-1]["finish_reason"] is not None

        await wait_until(finished)
        answer = (await api.messages(user, str(conversation["id"])))[-1]
        metadata = answer["metadata"]
        assert metadata["provider"] == "openai"
        assert (metadata["input_tokens"], metadata["output_tokens"]) == (9, 3)  # the server's
        assert metadata["cost_usd"] == 0
        assert metadata["provider_request_id"]


MODELS = "query { models { id provider } }"


async def test_only_configured_providers_models_are_offered(
    database: Database, fake_groq: FakeGroq, tmp_path: Path
) -> None:
    async with live(database, fake_groq, tmp_path) as api:  # Groq only, in development
        user = await api.register()
        offered = {m["provider"] for m in (await api.gql(MODELS, user=user))["models"]}
        assert offered == {"groq", "echo"}
        response = await api.http.post(
            "/api/v1/conversations", json={"model": "claude-haiku-4-5"}, headers=user.headers
        )
        assert response.status_code == 422
        assert "not available" in response.json()["error"]["message"]


@pytest.mark.parametrize(("echo_enabled", "offered"), [(None, False), (True, True)])
async def test_a_production_server_with_a_real_provider_offers_echo_only_when_asked(
    database: Database,
    fake_groq: FakeGroq,
    tmp_path: Path,
    echo_enabled: bool | None,
    offered: bool,
) -> None:
    async with live(
        database, fake_groq, tmp_path, app_env="production", echo_enabled=echo_enabled
    ) as api:
        user = await api.register()
        models = {m["id"] for m in (await api.gql(MODELS, user=user))["models"]}
        assert ("echo" in models) is offered
        response = await api.http.post(
            "/api/v1/conversations", json={"model": "echo"}, headers=user.headers
        )
        assert response.status_code == (201 if offered else 422)
