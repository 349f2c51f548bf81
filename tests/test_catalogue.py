"""The catalogue and the provider settings: MODELS_FILE, the default provider and model, echo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.config import Settings
from app.llm.models import BUILTIN_MODELS, DEFAULT_MODELS, load_catalogue

STRONG = "k3P9-vQz7-LmX2-aT8w-Rb5n-Yc1d-Hs6j-Fg4e"


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_models_file_adds_corrects_and_removes_models(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[models."llama3.2:3b"]
provider = "openai"
context_window = 131072
max_output_tokens = 8192
input_price_per_million = 0
output_price_per_million = 0

[models."gpt-4o-mini"]
input_price_per_million = 0.2
prices_read = 2026-07-01

[models."openai/gpt-oss-120b"]
enabled = false
""",
    )
    catalogue = load_catalogue(path)

    local = catalogue.get("llama3.2:3b")
    assert (local.provider, local.context_window, local.cost_usd(1000, 1000)) == (
        "openai",
        131072,
        0,
    )
    corrected = catalogue.get("gpt-4o-mini")
    assert corrected.input_price_per_million == 0.2
    assert corrected.output_price_per_million == 0.60  # the built-in value, kept
    assert str(corrected.prices_read) == "2026-07-01"
    assert "openai/gpt-oss-120b" not in catalogue
    assert "llama-3.1-8b-instant" in catalogue


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[models."x"]\nprovider = "openai"\ncontext_window = 0\n', "model 'x': context_window:"),
        ('[models."x"]\nprovider = "mistral"\n', "model 'x': provider:"),
        (
            '[models."gpt-4o"]\ninput_price_per_milion = 1\n',
            "model 'gpt-4o': input_price_per_milion:",
        ),
        (
            '[models."gpt-4o"]\ninput_price_per_million = "1"\n',
            "model 'gpt-4o': input_price_per_million:",
        ),
        (
            '[models."gpt-4o"]\ninput_price_per_million = -1\n',
            "model 'gpt-4o': input_price_per_million:",
        ),
        (
            '[models."new"]\nprovider = "openai"\ncontext_window = 10\n',
            "model 'new': max_output_tokens: required for a model not built in",
        ),
        ('[models."gpt-4o"]\nmax_output_tokens = 999999999\n', "model 'gpt-4o': max_output_tokens"),
        ('[models."bad name"]\nenabled = false\n', "model 'bad name': the name must be"),
        ("[model]\n", "unknown table 'model'"),
        ("[models.x\n", "is not valid TOML"),
    ],
)
def test_a_broken_models_file_names_the_file_the_model_and_the_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)

    with pytest.raises(ValidationError) as error:
        settings(models_file=path)

    message = str(error.value)
    assert "models_file" in message.lower()
    assert str(path) in message
    assert expected in message


def test_a_missing_models_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"models\.toml: cannot be read"):
        settings(models_file=tmp_path / "models.toml")


def test_every_default_model_is_built_in() -> None:
    builtin = {model.id: model.provider for model in BUILTIN_MODELS}
    assert all(builtin[model] == provider for provider, model in DEFAULT_MODELS.items())
    priced = [model for model in BUILTIN_MODELS if model.provider != "echo"]
    assert all(model.prices_read is not None for model in priced)


@pytest.mark.parametrize(
    ("values", "provider", "model"),
    [
        ({}, "echo", "echo"),
        ({"groq_api_key": "gsk_x"}, "groq", "llama-3.1-8b-instant"),
        ({"openai_base_url": "http://localhost:11434/v1"}, "openai", "gpt-4o-mini"),
        ({"anthropic_api_key": "sk-ant-x"}, "anthropic", "claude-haiku-4-5"),
        (
            {"groq_api_key": "gsk_x", "anthropic_api_key": "k", "llm_provider": "anthropic"},
            "anthropic",
            "claude-haiku-4-5",
        ),
    ],
)
def test_the_default_provider_and_model(values: dict[str, Any], provider: str, model: str) -> None:
    resolved = settings(**values)
    assert (resolved.resolved_llm_provider, resolved.resolved_default_model) == (provider, model)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"llm_provider": "openai"}, "LLM_PROVIDER=openai needs OPENAI_API_KEY or OPENAI_BASE_URL"),
        ({"llm_provider": "anthropic"}, "LLM_PROVIDER=anthropic needs ANTHROPIC_API_KEY"),
        ({"groq_api_key": "gsk_x", "default_model": "gpt-4o"}, "gpt-4o is a openai model"),
        (
            {"default_model": "gpt-5-turbo-max"},
            "DEFAULT_MODEL gpt-5-turbo-max is not in the catalogue",
        ),
        ({"llm_provider": "echo", "echo_enabled": False}, "contradicts ECHO_ENABLED=false"),
    ],
)
def test_provider_settings_that_cannot_work_are_refused(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(**values)


def test_echo_is_off_in_production_with_a_real_provider_unless_asked_for() -> None:
    production = {"app_env": "production", "jwt_secret": STRONG}
    assert settings(**production).resolved_echo_enabled  # echo is all it has
    assert not settings(**production, groq_api_key="gsk_x").resolved_echo_enabled
    assert settings(**production, groq_api_key="gsk_x", echo_enabled=True).resolved_echo_enabled
    assert settings(groq_api_key="gsk_x").resolved_echo_enabled  # development keeps it


@pytest.mark.parametrize(("key", "hint"), [(None, True), ("gsk_not_a_real_key", False)])
def test_the_echo_hint_is_logged_only_when_echo_is_the_default(
    tmp_path: Path, key: str | None, hint: bool
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env |= {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/db.sqlite", "LOG_FORMAT": "json"}
    if key is not None:
        env["GROQ_API_KEY"] = key
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=str(tmp_path),
    )
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:  # until the app says it started (or the process ends)
            lines.append(line)
            if '"started"' in line or "Application startup complete" in line:
                break
    finally:
        process.terminate()
        process.wait(timeout=30)
    output = "".join(lines)
    assert '"started"' in output, output
    assert ("echo_provider_active" in output) is hint
    assert "gsk_not_a_real_key" not in output
