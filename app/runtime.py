"""The long-lived objects of one running service, built by the lifespan and disposed on shutdown.

Nothing that holds a connection is created at import time: the engine, the model provider's HTTP
pool and the rate limiter's Redis client all live here, and transports reach them through the
application state (`request.app.state.runtime`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection

from app.auth.service import Accounts
from app.config import Settings
from app.conversations.service import Conversations
from app.db import create_engine, create_sessionmaker, rls_bypassed
from app.llm.base import ChatProvider
from app.llm.providers import serve_models
from app.llm.tokens import encoding
from app.ratelimit.service import Limits, build_limits
from app.streaming.service import Replies

logger = structlog.get_logger(__name__)


@dataclass(slots=True)
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    accounts: Accounts
    conversations: Conversations
    providers: Mapping[str, ChatProvider]
    replies: Replies
    limits: Limits


def build_providers(settings: Settings) -> AbstractAsyncContextManager[dict[str, ChatProvider]]:
    """Providers by name (every configured one, and `echo` while it is enabled), with the
    catalogue installed; closed on exit."""
    return serve_models(settings)


@asynccontextmanager
async def build_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    encoding()  # load the vocabulary now (~0.3 s), not in the first user's request
    engine = create_engine(settings)
    try:
        async with build_providers(settings) as providers, build_limits(settings) as limits:
            accounts = Accounts.from_settings(settings, limits)
            await _warn_if_rls_is_bypassed(engine)
            sessionmaker = create_sessionmaker(engine)
            replies = Replies(
                settings=settings,
                sessionmaker=sessionmaker,
                accounts=accounts,
                providers=providers,
                limits=limits,
            )
            try:
                yield Runtime(
                    settings=settings,
                    engine=engine,
                    sessionmaker=sessionmaker,
                    accounts=accounts,
                    conversations=Conversations(
                        default_model=settings.resolved_default_model,
                        provider_available=providers.__contains__,
                        stale_reply_after=settings.stale_reply_after,
                        limits=limits,
                        max_per_user=settings.user_max_conversations,
                    ),
                    providers=providers,
                    replies=replies,
                    limits=limits,
                )
            finally:
                # Replies still streaming are finalised (`cancelled`), giving back their stream
                # slots, before the limits and the engine go away.
                await replies.shutdown()
    finally:
        await engine.dispose()


async def _warn_if_rls_is_bypassed(engine: AsyncEngine) -> None:
    if engine.dialect.name != "postgresql":
        return
    try:
        async with engine.connect() as connection:
            bypassed = await rls_bypassed(connection)
    except Exception as error:  # noqa: BLE001  (readiness reports a down database; start anyway)
        logger.warning("database_unreachable_at_startup", error=type(error).__name__)
        return
    if bypassed:
        logger.warning(
            "row_level_security_bypassed",
            hint="DATABASE_URL connects as a superuser or BYPASSRLS role; connect as "
            "DATABASE_APP_ROLE so Row Level Security applies (README, 'Database roles')",
        )


def runtime_of(connection: HTTPConnection) -> Runtime:
    runtime: Runtime = connection.app.state.runtime
    return runtime
