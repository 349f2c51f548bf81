"""How errors leave the GraphQL endpoint: every error carries `extensions.code`.

- An `AppError` keeps its message and gets its code (and `retryAfter`, `resetAt`, ...).
- Errors GraphQL itself raises (syntax, validation, variable coercion) stay readable and get
  `BAD_USER_INPUT`.
- Anything else is unexpected: logged with the request id, shown as `INTERNAL_SERVER_ERROR` with
  the request id and nothing more.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import structlog
from graphql import GraphQLError
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types.execution import ExecutionContext

from app.errors import AppError

logger = structlog.get_logger(__name__)

INTERNAL_MESSAGE = "Internal server error"
# Strawberry turns these into HTTP answers (400, 405) itself.
_PASSED_THROUGH = (MissingQueryError, CannotGetOperationTypeError, InvalidOperationTypeError)


def is_unexpected(error: GraphQLError) -> bool:
    original = error.original_error
    return original is not None and not isinstance(original, (AppError, GraphQLError))


def _app_error(error: GraphQLError) -> AppError | None:
    original = error.original_error
    # Errors raised inside nested resolvers arrive wrapped in another GraphQLError.
    while isinstance(original, GraphQLError) and original.original_error is not None:
        original = original.original_error
    return original if isinstance(original, AppError) else None


def format_error(error: GraphQLError, request_id: str | None) -> GraphQLError:
    app_error = _app_error(error)
    extensions: dict[str, Any]
    if app_error is not None:
        message, extensions = app_error.message, app_error.extensions()
    elif is_unexpected(error):
        message = INTERNAL_MESSAGE
        extensions = {"code": "INTERNAL_SERVER_ERROR"}
        if request_id:
            extensions["requestId"] = request_id
    else:
        message = error.message
        extensions = {**(error.extensions or {}), "code": "BAD_USER_INPUT"}
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions=extensions,
    )


def log_unexpected(errors: list[GraphQLError], execution_context: ExecutionContext | None) -> None:
    for error in errors:
        if is_unexpected(error):
            logger.error(
                "graphql_unexpected_error",
                path=error.path,
                operation=execution_context.operation_name if execution_context else None,
                exc_info=error.original_error,
            )


class ErrorCodes(SchemaExtension):
    """Rewrites every error of every result (streamed ones too) into the contract's shape."""

    def _request_id(self) -> str | None:
        return getattr(self.execution_context.context, "request_id", None)

    def _rewrite(self, result: object) -> None:
        errors = getattr(result, "errors", None)
        if errors:
            request_id = self._request_id()
            result.errors = [format_error(error, request_id) for error in errors]  # type: ignore[attr-defined]

    def on_operation(self) -> Iterator[None]:
        self._streamed = False
        try:
            yield
        except _PASSED_THROUGH:
            raise
        except Exception as error:
            # Another extension failed after the resolvers ran (a commit, say). Strawberry would
            # answer with the exception's own text, driver message and SQL included.
            wrapped = (
                error
                if isinstance(error, GraphQLError)
                else GraphQLError(str(error), original_error=error)
            )
            log_unexpected([wrapped], self.execution_context)
            raise format_error(wrapped, self._request_id()) from error
        if not self._streamed:
            self._rewrite(self.execution_context.result)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        self._streamed = True
        self._rewrite(result)
        yield None
