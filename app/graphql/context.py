"""The typed GraphQL context and the per-operation unit of work.

Strawberry builds the context once per HTTP request but only once per *websocket connection*, so
nothing operation-scoped may live on it. Each query or mutation instead gets an `Operation` (its
database session, its caller, its DataLoaders), opened and closed around execution by
`UnitOfWorkExtension` and reached through `info.context.operation`. Subscriptions get no
session at all: the reply pipeline opens its own short transactions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.dataloader import DataLoader
from strawberry.extensions import SchemaExtension
from strawberry.fastapi import BaseContext
from strawberry.types import Info as StrawberryInfo
from strawberry.types.graphql import OperationType

from app.auth.service import Caller
from app.runtime import Runtime

logger = structlog.get_logger(__name__)

K = TypeVar("K")
V = TypeVar("V")


@dataclass(slots=True)
class Operation:
    db: AsyncSession
    caller: Caller | None = None
    loaders: dict[str, DataLoader[Any, Any]] = field(default_factory=dict)


_operation: ContextVar[Operation | None] = ContextVar("graphql_operation", default=None)


class Context(BaseContext):
    def __init__(
        self,
        runtime: Runtime,
        credential: str | None,
        client_ip: str | None,
        request_id: str | None,
    ) -> None:
        super().__init__()
        self.runtime = runtime
        self.credential = credential
        self.client_ip = client_ip
        self.request_id = request_id

    @property
    def operation(self) -> Operation:
        operation = _operation.get()
        if operation is None:  # a resolver ran outside UnitOfWorkExtension: a wiring bug
            raise RuntimeError("no GraphQL operation is active")
        return operation

    @property
    def db(self) -> AsyncSession:
        return self.operation.db

    async def caller(self) -> Caller:
        """The authenticated caller of this operation (authenticated once, then cached)."""
        operation = self.operation
        if operation.caller is None:
            operation.caller = await self.runtime.accounts.authenticate(
                operation.db, self.credential
            )
        return operation.caller

    def loader(self, name: str, factory: Callable[[], DataLoader[K, V]]) -> DataLoader[K, V]:
        """The operation's DataLoader called `name`, created on first use."""
        loaders = self.operation.loaders
        if name not in loaders:
            loaders[name] = factory()
        loader: DataLoader[K, V] = loaders[name]
        return loader


Info = StrawberryInfo[Context, None]


class UnitOfWorkExtension(SchemaExtension):
    """One transaction per query or mutation: committed when it had no errors, else rolled back."""

    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        if (
            not isinstance(context, Context)
            or self.execution_context.operation_type is OperationType.SUBSCRIPTION
        ):
            yield
            return
        async with context.runtime.sessionmaker() as session:
            token = _operation.set(Operation(db=session))
            try:
                yield
            finally:
                _operation.reset(token)
            result = self.execution_context.result
            if result is not None and not result.errors:
                await session.commit()  # a failure here is masked by ErrorCodes
                return
            try:
                await session.rollback()
            except SQLAlchemyError as error:
                # When a field fails, graphql-core cancels its siblings, and a driver cancelled
                # mid-statement closes its connection: the transaction died with it, and the
                # field's own error is the answer. Nothing is left to roll back.
                logger.warning("rollback_after_error_failed", error=type(error).__name__)
                await session.invalidate()
