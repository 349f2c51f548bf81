"""FastAPI dependencies shared by every REST route: the runtime and the request's unit of work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.runtime import Runtime, runtime_of


async def get_db(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: committed before the response is sent, rolled back on error."""
    async with runtime_of(request).sessionmaker() as session, session.begin():
        yield session


RuntimeDep = Annotated[Runtime, Depends(runtime_of)]
# scope="function": the transaction ends (commit or rollback) before the response goes out, so a
# client never reads its own write before it is committed, and a failed commit is reported.
DbSession = Annotated[AsyncSession, Depends(get_db, scope="function")]
