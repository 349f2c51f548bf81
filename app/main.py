"""The application factory. `create_app()` wires the transports; the lifespan builds the runtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import health, openapi
from app.auth import routes as auth_routes
from app.config import Settings, get_settings
from app.conversations import routes as conversation_routes
from app.graphql.router import AppGraphQLRouter
from app.graphql.schema import build_schema
from app.http import (
    ERROR_RESPONSES,
    RequestBodyLimitMiddleware,
    SecurityHeadersMiddleware,
    UnexpectedErrorMiddleware,
    install_error_handlers,
)
from app.lifecycle import on_termination, tune_garbage_collector
from app.observability import RequestIdMiddleware, configure_logging
from app.runtime import build_runtime
from app.streaming import routes as streaming_routes
from app.usage import routes as usage_routes
from app.web import assets, pages

logger = structlog.get_logger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with build_runtime(settings) as runtime:
            app.state.runtime = runtime
            tune_garbage_collector()
            logger.info(
                "started",
                env=settings.app_env,
                database=runtime.engine.dialect.name,
                llm_provider=settings.resolved_llm_provider,
                graphiql=settings.resolved_graphiql,
            )
            stopping: set[asyncio.Task[None]] = set()

            def stop_replies() -> None:
                logger.info("termination_signal", live_replies=runtime.replies.live_count)
                stopping.add(asyncio.ensure_future(runtime.replies.shutdown()))

            with on_termination(stop_replies):
                yield
            logger.info("stopping")

    app = FastAPI(
        title="Conversation API",
        version="0.1.0",
        summary="Accounts, conversations and streamed model replies over GraphQL and SSE.",
        lifespan=lifespan,
        # Ours (app/web): Swagger UI with its files served here; no ReDoc, whose page needs a CDN.
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    openapi.install(app)

    api = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)
    api.include_router(auth_routes.router)
    api.include_router(conversation_routes.router)
    api.include_router(usage_routes.router)
    api.include_router(streaming_routes.router)
    app.include_router(api)
    app.include_router(health.router)
    app.include_router(pages.router)
    app.include_router(assets.router)
    app.include_router(AppGraphQLRouter(build_schema(settings), settings), prefix="/graphql")

    # Outermost last: request ids wrap everything, so even errors from other middleware carry one.
    # The body limit and the masked 500 are innermost: their answers get the security, CORS and
    # request-id headers like any other.
    app.add_middleware(RequestBodyLimitMiddleware, max_bytes=settings.max_request_body_bytes)
    app.add_middleware(UnexpectedErrorMiddleware)
    app.add_middleware(SecurityHeadersMiddleware, hsts=settings.is_production)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=False,  # bearer tokens, not cookies
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            # x-api-key: where Anthropic's SDKs (also in browsers) send the credential.
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Accept", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
            max_age=600,
        )
    app.add_middleware(RequestIdMiddleware)
    return app
