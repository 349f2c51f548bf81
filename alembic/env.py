"""Alembic runs on the application's async engine, with the URL from the application's settings.

The URL is `MIGRATION_DATABASE_URL` (a role that owns the tables) or, when that is unset,
`DATABASE_URL`. A caller may hand in a URL through `config.attributes["url"]` (the test suite does).

Bad settings and a database that cannot be reached end the run with one line naming the problem
(`make run` migrates first: a mistyped DATABASE_URL printed a hundred lines of traceback); errors
of the migrations themselves keep their traceback.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError

import app.auth.models
import app.conversations.models  # noqa: F401  (registers the tables on the metadata)
from alembic import context
from app.config import ConfigurationError, Settings, get_settings
from app.db import Base, create_engine

config = context.config
target_metadata = Base.metadata


def _settings() -> Settings:
    try:
        return get_settings()
    except ConfigurationError as error:
        raise SystemExit(f"conversation-api: {error}") from None


def _url() -> str:
    url = config.attributes.get("url")
    return str(url) if url else _settings().alembic_url


def _app_role() -> str:
    return str(config.attributes.get("app_role") or _settings().database_app_role)


def _unreachable(url: str, error: BaseException) -> str:
    variable = "MIGRATION_DATABASE_URL" if _settings().migration_database_url else "DATABASE_URL"
    where = make_url(url).render_as_string(hide_password=True)
    cause = getattr(error, "orig", None) or error  # SQLAlchemy wraps the driver's error
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return f"conversation-api: cannot connect to the database at {where} ({variable}): {reason}"


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    config.attributes["app_role"] = _app_role()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    config.attributes["app_role"] = _app_role()
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    url = _url()
    try:
        engine = create_engine(_settings(), url=url, pool_size=1)
    except OSError as error:  # SQLite: the database's folder cannot be made
        raise SystemExit(_unreachable(url, error)) from None
    connected = False
    try:
        async with engine.connect() as connection:
            connected = True
            await connection.run_sync(_run_sync)
            await connection.commit()
    except (OSError, SQLAlchemyError) as error:
        if connected:
            raise
        raise SystemExit(_unreachable(url, error)) from None
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_sync(connection)
    else:
        asyncio.run(run_migrations_online())
