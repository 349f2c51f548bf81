"""`/graphql`: HTTP, GraphiQL, and both websocket subprotocols, with one way to authenticate.

Websocket credentials come from the `connection_init` payload or, failing that, from the upgrade
request's `Authorization` header. A connection without valid credentials is closed with 4403
under both subprotocols. Each subscription re-checks the credential (an expired token is refused
even on an open socket): the reply pipeline authenticates on every start.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from contextlib import suppress
from datetime import timedelta

import orjson
import strawberry
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse
from strawberry.exceptions import ConnectionRejectionError
from strawberry.fastapi import GraphQLRouter
from strawberry.subscriptions import (
    GRAPHQL_SSE_PROTOCOL,
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    GRAPHQL_WS_PROTOCOL,
    MULTIPART_SUBSCRIPTION_PROTOCOL,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import ConnectionInitMessage, StartMessage
from strawberry.types.unset import UNSET, UnsetType

from app.auth.dependencies import credential_from_connection_params, credential_from_headers
from app.config import Settings
from app.db import unit_of_work
from app.errors import Unauthenticated
from app.graphql.context import Context
from app.graphql.graphiql import graphiql_page
from app.graphql.websockets import TransportWSHandler, at_operation_limit, operation_limit_error
from app.http import client_ip
from app.observability import request_id_of
from app.runtime import runtime_of

FORBIDDEN = 4403
INIT_TIMEOUT = 4408


async def get_context(connection: HTTPConnection) -> Context:
    runtime = runtime_of(connection)
    return Context(
        runtime=runtime,
        credential=credential_from_headers(connection.headers),
        client_ip=client_ip(connection, runtime.settings.trusted_proxy_hops),
        request_id=request_id_of(connection.scope),
    )


class LegacyGraphQLWSHandler(BaseGraphQLWSHandler[Context, None]):
    """`graphql-ws` (the legacy protocol): an init deadline, and 4403 for rejected credentials."""

    _init_deadline: asyncio.Task[None] | None = None

    async def handle(self) -> None:
        timeout = self.view.connection_init_wait_timeout.total_seconds()
        self._init_deadline = asyncio.create_task(self._close_if_not_initialised(after=timeout))
        try:
            await super().handle()
        finally:
            self._init_deadline.cancel()
            with suppress(asyncio.CancelledError):
                await self._init_deadline

    async def _close_if_not_initialised(self, *, after: float) -> None:
        await asyncio.sleep(after)
        if not self.connection_acknowledged:
            await self.websocket.close(
                code=INIT_TIMEOUT, reason="Connection initialisation timeout"
            )

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        # Strawberry's version closes a rejected connection with 1011; clients of this API get the
        # same 4403 under both subprotocols.
        if self._init_deadline is not None:
            self._init_deadline.cancel()
        payload = message.get("payload")
        if payload is not None and not isinstance(payload, dict):
            await self.send_message({"type": "connection_error"})
            await self.websocket.close(code=4400, reason="Invalid connection init payload")
            return
        self.context.connection_params = payload
        try:
            await self.view.on_ws_connect(self.context)
        except ConnectionRejectionError:
            await self.send_message(
                {"type": "connection_error", "payload": {"message": "Forbidden"}}
            )
            await self.websocket.close(code=FORBIDDEN, reason="Forbidden")
            return
        await self.send_message({"type": "connection_ack"})
        self.connection_acknowledged = True
        if self.keep_alive:
            self.keep_alive_task = asyncio.create_task(self.handle_keep_alive())

    async def handle_start(self, message: StartMessage) -> None:
        limit = self.max_subscriptions_per_connection
        if (
            self.connection_acknowledged
            and message["id"] not in self.tasks
            and at_operation_limit(limit, len(self.tasks))
        ):
            assert limit is not None
            await self.send_message(
                {"type": "error", "id": message["id"], "payload": operation_limit_error(limit)}
            )
            return
        await super().handle_start(message)


class AppGraphQLRouter(GraphQLRouter[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyGraphQLWSHandler

    def __init__(self, schema: strawberry.Schema, settings: Settings) -> None:
        self._assets_cdn_url = settings.assets_cdn_url
        super().__init__(
            schema,
            context_getter=get_context,
            graphql_ide="graphiql" if settings.resolved_graphiql else None,
            subscription_protocols=(
                GRAPHQL_TRANSPORT_WS_PROTOCOL,
                GRAPHQL_WS_PROTOCOL,
                MULTIPART_SUBSCRIPTION_PROTOCOL,
                GRAPHQL_SSE_PROTOCOL,
            ),
            connection_init_wait_timeout=timedelta(seconds=settings.ws_init_timeout_seconds),
            max_subscriptions_per_connection=settings.ws_max_subscriptions,
            keep_alive=True,
            keep_alive_interval=settings.stream_keepalive_seconds,
            allowed_origins=settings.cors_origins,
        )

    def encode_json(self, data: object) -> str:
        # orjson: several times faster than json.dumps on every result and every stream event.
        # Websocket frames must be text, so the bytes are decoded once.
        try:
            return orjson.dumps(data).decode()
        except TypeError:  # something orjson does not know: the standard encoder's behaviour
            return json.dumps(data, separators=(",", ":"))

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        # Our page: it also authenticates subscriptions with the Headers pane (see graphiql.py).
        return graphiql_page(self._assets_cdn_url).response()

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        params = context.connection_params
        credential = (
            credential_from_connection_params(params if isinstance(params, Mapping) else None)
            or context.credential
        )
        runtime = context.runtime
        try:
            async with unit_of_work(runtime.sessionmaker) as db:
                await runtime.accounts.authenticate(db, credential)
        except Unauthenticated as error:
            raise ConnectionRejectionError() from error
        context.credential = credential
        unset: UnsetType = UNSET
        return unset
