"""The providers one process offers, built from the settings (in the lifespan, never at import).

Every real provider with a key or an endpoint configured is built; a conversation's model names
the provider that answers it (`app.llm.models`). `echo` is offered while it is enabled
(`ECHO_ENABLED`: by default everywhere except a production server that has a real provider).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog

from app.config import Settings
from app.llm.base import ChatProvider
from app.llm.echo import EchoProvider
from app.llm.models import installed, load_catalogue

logger = structlog.get_logger(__name__)


def build_providers(settings: Settings) -> dict[str, ChatProvider]:
    """Providers by name: each configured one, and `echo` when it is enabled."""
    providers: dict[str, ChatProvider] = {}
    configured = settings.configured_providers
    if "groq" in configured:
        from app.llm.groq import GroqProvider  # each SDK is imported only when it is used

        providers["groq"] = GroqProvider.from_settings(settings)
    if "openai" in configured:
        from app.llm.openai import OpenAIProvider

        providers["openai"] = OpenAIProvider.from_settings(settings)
    if "anthropic" in configured:
        from app.llm.anthropic import AnthropicProvider

        providers["anthropic"] = AnthropicProvider.from_settings(settings)
    if settings.resolved_echo_enabled:
        providers["echo"] = EchoProvider(settings.echo_token_delay_seconds)
    if settings.resolved_llm_provider == "echo":
        logger.warning(
            "echo_provider_active",
            hint="offline echo model: replies repeat the prompt; set GROQ_API_KEY, "
            "OPENAI_API_KEY (or OPENAI_BASE_URL) or ANTHROPIC_API_KEY for real replies",
        )
    return providers


@asynccontextmanager
async def serve_models(settings: Settings) -> AsyncIterator[dict[str, ChatProvider]]:
    """The providers, with the catalogue (MODELS_FILE) installed for the process; both are
    closed and uninstalled on exit."""
    # Settings checked the file and DEFAULT_MODEL when they were read.
    catalogue = load_catalogue(settings.models_file)
    providers = build_providers(settings)
    try:
        with installed(catalogue, providers):
            yield providers
    finally:
        for provider in providers.values():
            await provider.aclose()
