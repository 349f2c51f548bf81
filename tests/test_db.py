"""Dialect quirks in app.db, checked against the real databases."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import is_unique_violation


async def test_unique_violations_are_told_apart_from_foreign_key_violations(
    owner_engine: AsyncEngine,
) -> None:
    is_sqlite = owner_engine.dialect.name == "sqlite"

    def uid() -> str:
        return uuid.uuid4().hex if is_sqlite else str(uuid.uuid4())

    insert_user = text(
        "INSERT INTO users (id, email, password_hash, created_at) "
        "VALUES (:id, :email, 'x', CURRENT_TIMESTAMP)"
    )
    async with owner_engine.begin() as connection:
        await connection.execute(insert_user, {"id": uid(), "email": "dup@example.test"})

    async def same_email_again() -> None:
        async with owner_engine.begin() as connection:
            await connection.execute(insert_user, {"id": uid(), "email": "dup@example.test"})

    with pytest.raises(IntegrityError) as duplicate:
        await same_email_again()
    assert is_unique_violation(duplicate.value)

    async def key_of_nobody() -> None:
        async with owner_engine.begin() as connection:
            if is_sqlite:
                await connection.execute(text("PRAGMA foreign_keys=ON"))
            await connection.execute(
                text(
                    "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at) "
                    "VALUES (:id, :user, 'k', 'p', :hash, CURRENT_TIMESTAMP)"
                ),
                {"id": uid(), "user": uid(), "hash": uuid.uuid4().hex},
            )

    with pytest.raises(IntegrityError) as orphan:
        await key_of_nobody()
    assert not is_unique_violation(orphan.value)
