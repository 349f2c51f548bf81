"""Database plumbing: the declarative base, engines, units of work, and every dialect quirk.

A *unit of work* is one transaction on one session. REST requests and GraphQL operations each
get exactly one; services `flush()` when they need ids and never commit. The unit of work commits
when the block ends normally and rolls back otherwise.

On PostgreSQL each unit of work names its caller with `set_config('app.user_id', ..., true)`,
which Row Level Security policies read. The setting is transaction-local, so a pooled
connection never carries one caller's identity into the next transaction.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uuid6
from sqlalchemy import JSON, DateTime, MetaData, event, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from app.config import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    """A time-ordered UUID (v7): ids sort by creation, which keeps B-tree inserts local."""
    value: uuid.UUID = uuid6.uuid7()
    return uuid.UUID(bytes=value.bytes)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are stored and returned in UTC, also on SQLite (which has no time zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType}


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _prepare_sqlite_file(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)


def _configure_sqlite(engine: AsyncEngine) -> None:
    # pysqlite's own transaction handling defers BEGIN and cannot upgrade a read lock to a write
    # lock without failing; take the write lock up front so concurrent writers wait their turn.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(
    settings: Settings, *, url: str | None = None, pool_size: int | None = None
) -> AsyncEngine:
    url = url or settings.database_url
    if is_sqlite(url):
        _prepare_sqlite_file(url)
        engine = create_async_engine(url, echo=settings.database_echo, connect_args={"timeout": 30})
        _configure_sqlite(engine)
        return engine
    size = pool_size or settings.database_pool_size
    return create_async_engine(
        url,
        echo=settings.database_echo,
        pool_size=size,
        max_overflow=0 if pool_size else settings.database_max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"server_settings": {"application_name": "conversation-api"}},
    )


class SerializedSession(AsyncSession):
    """An AsyncSession whose statements never overlap.

    GraphQL resolves sibling fields concurrently, and an AsyncSession must not be used by two
    tasks at once; a per-session lock around each database round trip makes one unit of work safe
    to share between the resolvers of one operation.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._io_lock = asyncio.Lock()

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        async with self._io_lock:
            return await super().execute(*args, **kwargs)

    async def scalar(self, *args: Any, **kwargs: Any) -> Any:
        async with self._io_lock:
            return await super().scalar(*args, **kwargs)

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        async with self._io_lock:
            return await super().get(*args, **kwargs)

    async def flush(self, *args: Any, **kwargs: Any) -> None:
        async with self._io_lock:
            await super().flush(*args, **kwargs)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(
        engine, class_=SerializedSession, expire_on_commit=False, autoflush=False
    )


# set_config(..., true) is SET LOCAL with a bind parameter: it ends with the transaction. Built
# once: it runs at the start of nearly every unit of work.
_SET_LOCAL = text("SELECT set_config(:name, :value, true)")


async def _set_local(session: AsyncSession, name: str, value: str) -> None:
    # SQLite has no Row Level Security; the services' owner filters are the only wall there.
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(_SET_LOCAL, {"name": name, "value": value})


async def set_rls_user(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Name the caller for Row Level Security, for the rest of this transaction only."""
    await _set_local(session, "app.user_id", str(user_id))


async def set_rls_api_key(session: AsyncSession, key_hash: str) -> None:
    """Let this transaction see the one API key whose hash the caller proved it knows."""
    await _set_local(session, "app.api_key_hash", key_hash)


async def set_rls_login_email(session: AsyncSession, email: str) -> None:
    """Let this transaction see the one account being logged in to."""
    await _set_local(session, "app.login_email", email)


@asynccontextmanager
async def unit_of_work(
    sessionmaker: async_sessionmaker[AsyncSession], *, user_id: uuid.UUID | None = None
) -> AsyncIterator[AsyncSession]:
    """One transaction: committed when the block ends normally, rolled back on any exception."""
    async with sessionmaker() as session, session.begin():
        if user_id is not None:
            await set_rls_user(session, user_id)
        yield session


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def rls_bypassed(connection: AsyncConnection) -> bool:
    """True when the connected role ignores Row Level Security (superuser or BYPASSRLS)."""
    if connection.dialect.name != "postgresql":
        return False
    row = (
        await connection.execute(
            text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
        )
    ).scalar_one()
    return bool(row)


def is_unique_violation(error: BaseException) -> bool:
    """Whether an IntegrityError is a unique violation (not a foreign key or check), on both
    dialects: PostgreSQL says "violates unique constraint", SQLite "UNIQUE constraint failed"."""
    return "unique constraint" in str(getattr(error, "orig", error)).lower()
