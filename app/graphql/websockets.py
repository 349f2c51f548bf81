"""Websocket protocol handlers: the per-connection operation cap answers with a coded error.

Strawberry refuses the operation past WS_MAX_SUBSCRIPTIONS on one connection with a bare
"Subscription limit reached"; clients of this API get the contract's shape instead: a
`RATE_LIMITED` error with `retryAfter`, the connection staying open for the others.
"""

from __future__ import annotations

from graphql import GraphQLError
from graphql.error import GraphQLFormattedError
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage

from app.errors import RateLimited
from app.graphql.context import Context

# An operation ends when its stream does; no window to wait for, so "shortly".
RETRY_AFTER_SECONDS = 1


def operation_limit_error(limit: int) -> GraphQLFormattedError:
    error = RateLimited(
        RETRY_AFTER_SECONDS, f"At most {limit} operations can run at once on one connection"
    )
    return GraphQLError(error.message, extensions=error.extensions()).formatted


def at_operation_limit(limit: int | None, running: int) -> bool:
    return limit is not None and running >= limit


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """`graphql-transport-ws` with the coded operation-limit error."""

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        limit = self.max_subscriptions_per_connection
        if (
            self.connection_acknowledged
            and message["id"] not in self.operations
            and at_operation_limit(limit, len(self.operations))
        ):
            assert limit is not None
            await self.send_message(
                {"id": message["id"], "type": "error", "payload": [operation_limit_error(limit)]}
            )
            return
        await super().handle_subscribe(message)
