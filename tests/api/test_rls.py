"""Row Level Security: the database's own wall behind the services' owner checks (PostgreSQL).

These tests go around the service layer on purpose: they run raw SQL as the application role
inside a unit of work that names a caller, exactly as the service's sessions do, and show the
database itself filters rows and refuses writes for other users.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.db import create_engine, create_sessionmaker, unit_of_work
from tests.conftest import APP_ROLE, Database, LiveServer
from tests.support.api import Api, User
from tests.support.streams import transports

pytestmark = pytest.mark.postgres_only

USER_TABLES = ("users", "api_keys", "conversations", "messages")


@pytest.fixture(scope="module")
def server_settings() -> dict[str, Any]:
    # One pooled connection for the whole server: any caller identity that outlived its
    # transaction would show up in the very next request.
    return {"database_pool_size": 1, "database_max_overflow": 0}


@pytest.fixture(scope="module")
async def app_sessions(
    database: Database, server: LiveServer
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions as the application role, on a pool of exactly one connection."""
    engine = create_engine(server.settings, url=database.app_url, pool_size=1)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def _user_with_data(api: Api) -> User:
    """A user with a conversation, an API key and a streamed reply (echo: no upstream needed)."""
    user = await api.register()
    conversation = await api.create_conversation(user, model="echo", title=f"of {user.email}")
    sse = transports(api.http, api.ws_url)["sse"]
    assert (await sse.stream(user, str(conversation["id"]), "hello")).error is None
    key = await api.http.post("/api/v1/api-keys", json={"name": "k"}, headers=user.headers)
    assert key.status_code == 201
    return user


async def _owners(session: AsyncSession, table: str) -> set[str]:
    column = "id" if table == "users" else "user_id"
    rows = await session.execute(text(f"SELECT {column} FROM {table}"))  # noqa: S608  (fixed names)
    return {str(row[0]) for row in rows}


async def test_rls_is_enabled_and_forced_and_the_app_role_cannot_bypass_it(
    owner_engine: AsyncEngine,
) -> None:
    async with owner_engine.connect() as connection:
        tables = (
            await connection.execute(
                text(
                    "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
                    "WHERE relname = ANY(:names) AND relkind = 'r'"
                ),
                {"names": list(USER_TABLES)},
            )
        ).all()
        role = (
            await connection.execute(
                text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = :r"),
                {"r": APP_ROLE},
            )
        ).one()
        owners = (
            await connection.execute(
                text("SELECT tablename, tableowner FROM pg_tables WHERE tablename = ANY(:n)"),
                {"n": list(USER_TABLES)},
            )
        ).all()
        policies = (
            await connection.execute(
                text("SELECT tablename, policyname FROM pg_policies WHERE tablename = ANY(:n)"),
                {"n": list(USER_TABLES)},
            )
        ).all()
    assert {row.relname for row in tables} == set(USER_TABLES)
    assert all(row.relrowsecurity and row.relforcerowsecurity for row in tables), tables
    assert role.rolsuper is False and role.rolbypassrls is False
    assert all(row.tableowner != APP_ROLE for row in owners), owners
    assert {row.tablename for row in policies} == set(USER_TABLES)


async def test_raw_sql_in_a_callers_unit_of_work_sees_only_their_rows(
    api: Api, app_sessions: async_sessionmaker[AsyncSession]
) -> None:
    alice, bob = await _user_with_data(api), await _user_with_data(api)
    async with unit_of_work(app_sessions, user_id=uuid.UUID(alice.id)) as session:
        for table in USER_TABLES:
            assert await _owners(session, table) == {alice.id}, table
        messages = (await session.execute(text("SELECT * FROM messages"))).all()
        assert len(messages) == 2  # Alice's question and its reply; none of Bob's
    async with unit_of_work(app_sessions, user_id=uuid.UUID(bob.id)) as session:
        assert await _owners(session, "messages") == {bob.id}


async def test_writes_for_another_user_are_refused_by_the_database(
    api: Api, app_sessions: async_sessionmaker[AsyncSession]
) -> None:
    alice, bob = await _user_with_data(api), await _user_with_data(api)
    insert = text(
        "INSERT INTO conversations (id, user_id, title, model, metadata, created_at, updated_at) "
        "VALUES (:id, :owner, 'planted', 'echo', '{}', now(), now())"
    )
    with pytest.raises(DBAPIError, match="row-level security"):
        async with unit_of_work(app_sessions, user_id=uuid.UUID(alice.id)) as session:
            await session.execute(insert, {"id": uuid.uuid4(), "owner": bob.id})
    async with unit_of_work(app_sessions, user_id=uuid.UUID(alice.id)) as session:
        changed = await session.execute(
            text("UPDATE conversations SET title = 'hijacked' WHERE user_id = :b"), {"b": bob.id}
        )
        deleted = await session.execute(
            text("DELETE FROM messages WHERE user_id = :b"), {"b": bob.id}
        )
        assert changed.rowcount == 0 and deleted.rowcount == 0
    conversations = await api.http.get("/api/v1/conversations", headers=bob.headers)
    assert [c["title"] for c in conversations.json()["data"]] == [f"of {bob.email}"]


async def test_without_a_caller_nothing_is_visible(
    api: Api, app_sessions: async_sessionmaker[AsyncSession]
) -> None:
    await _user_with_data(api)
    async with unit_of_work(app_sessions) as session:
        for table in USER_TABLES:
            assert await _owners(session, table) == set(), table


async def test_the_caller_does_not_leak_to_the_next_transaction_on_a_pooled_connection(
    api: Api, app_sessions: async_sessionmaker[AsyncSession]
) -> None:
    alice = await _user_with_data(api)
    async with unit_of_work(app_sessions, user_id=uuid.UUID(alice.id)) as session:
        assert await _owners(session, "conversations") == {alice.id}
    # Same single pooled connection, no caller named: nothing of Alice's may be visible.
    async with unit_of_work(app_sessions) as session:
        assert await _owners(session, "conversations") == set()
        assert (
            await session.execute(text("SELECT current_setting('app.user_id', true)"))
        ).scalar() in ("", None)


async def test_fifty_concurrent_requests_each_see_only_their_own_rows(
    api: Api, app_sessions: async_sessionmaker[AsyncSession]
) -> None:
    alice, bob = await _user_with_data(api), await _user_with_data(api)
    users = [alice, bob] * 25

    async def through_the_api(user: User) -> set[str]:
        response = await api.http.get("/api/v1/conversations", headers=user.headers)
        assert response.status_code == 200
        return {c["title"] for c in response.json()["data"]}

    async def through_raw_sql(user: User) -> set[str]:
        async with unit_of_work(app_sessions, user_id=uuid.UUID(user.id)) as session:
            return await _owners(session, "conversations")

    seen = await asyncio.gather(*(through_the_api(user) for user in users))
    assert seen == [{f"of {user.email}"} for user in users]
    raw = await asyncio.gather(*(through_raw_sql(user) for user in users))
    assert raw == [{user.id} for user in users]


async def test_the_identity_window_shows_one_account_and_writes_need_the_caller(
    api: Api, app_sessions: async_sessionmaker[AsyncSession], owner_engine: AsyncEngine
) -> None:
    alice, bob = await api.register(), await api.register()
    async with owner_engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE users SET identity_issuer = 'https://issuer.test', "
                "identity_subject = 'alice' WHERE id = :a"
            ),
            {"a": alice.id},
        )
    window = text(
        "SELECT set_config('app.identity_issuer', 'https://issuer.test', true), "
        "set_config('app.identity_subject', :subject, true)"
    )
    rehash = text("UPDATE users SET password_hash = 'planted' WHERE id = :id")
    async with unit_of_work(app_sessions) as session:
        await session.execute(window, {"subject": "alice"})
        assert await _owners(session, "users") == {alice.id}
        # Read-only: the window finds the account, it does not let anyone change it.
        assert (await session.execute(rehash, {"id": alice.id})).rowcount == 0
    async with unit_of_work(app_sessions) as session:
        await session.execute(window, {"subject": "nobody"})
        assert await _owners(session, "users") == set()
    async with unit_of_work(app_sessions, user_id=uuid.UUID(alice.id)) as session:
        assert (await session.execute(rehash, {"id": bob.id})).rowcount == 0
    # Only the columns the service changes are writable at all, even for one's own row.
    with pytest.raises(DBAPIError, match="permission denied"):
        async with unit_of_work(app_sessions, user_id=uuid.UUID(alice.id)) as session:
            await session.execute(
                text("UPDATE users SET created_at = now() WHERE id = :a"), {"a": alice.id}
            )
    login = await api.http.post(
        "/api/v1/auth/login", json={"email": bob.email, "password": bob.password}
    )
    assert login.status_code == 200  # nobody's hash was changed
