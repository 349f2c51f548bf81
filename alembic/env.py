"""Alembic runs on the application's async engine, with the URL from the application's settings.

The URL is `MIGRATION_DATABASE_URL` (a role that owns the tables) or, when that is unset,
`DATABASE_URL`. A caller may hand in a URL through `config.attributes["url"]` (the test suite does).
"""

from __future__ import annotations

import asyncio

from sqlalchemy.engine import Connection

import app.auth.models
import app.conversations.models  # noqa: F401  (registers the tables on the metadata)
from alembic import context
from app.config import get_settings
from app.db import Base, create_engine

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url")
    return str(url) if url else get_settings().alembic_url


def _app_role() -> str:
    return str(config.attributes.get("app_role") or get_settings().database_app_role)


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
    engine = create_engine(get_settings(), url=_url(), pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
            await connection.commit()
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
