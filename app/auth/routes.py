from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, ConfigDict, Field

from app.auth.dependencies import ClientIp, CurrentCaller
from app.auth.models import ApiKey, User
from app.auth.service import Session
from app.deps import DbSession, RuntimeDep

router = APIRouter(tags=["auth"])


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Bounds here only stop absurd bodies early; the service gives the precise messages.
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105  (OAuth token type, not a secret)
    expires_in: int

    @classmethod
    def of(cls, session: Session) -> TokenOut:
        return cls(access_token=session.access_token, expires_in=session.expires_in)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls.model_validate(user)


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=100)


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls.model_validate(key)


class ApiKeyCreatedOut(ApiKeyOut):
    secret: str


@router.post("/auth/register", status_code=status.HTTP_201_CREATED)
async def register(
    body: Credentials, db: DbSession, runtime: RuntimeDep, client_ip: ClientIp
) -> TokenOut:
    session = await runtime.accounts.register(db, body.email, body.password, client_ip=client_ip)
    return TokenOut.of(session)


@router.post("/auth/login", responses={401: {"description": "Wrong email or password"}})
async def login(
    body: Credentials, db: DbSession, runtime: RuntimeDep, client_ip: ClientIp
) -> TokenOut:
    session = await runtime.accounts.login(db, body.email, body.password, client_ip=client_ip)
    return TokenOut.of(session)


@router.get("/auth/me")
async def me(caller: CurrentCaller, db: DbSession, runtime: RuntimeDep) -> UserOut:
    return UserOut.of(await runtime.accounts.me(db, caller))


@router.post("/api-keys", status_code=status.HTTP_201_CREATED)
async def create_api_key(
    body: ApiKeyIn, caller: CurrentCaller, db: DbSession, runtime: RuntimeDep
) -> ApiKeyCreatedOut:
    key, secret = await runtime.accounts.create_api_key(db, caller, body.name)
    return ApiKeyCreatedOut(**ApiKeyOut.of(key).model_dump(), secret=secret)


@router.get("/api-keys")
async def list_api_keys(
    caller: CurrentCaller, db: DbSession, runtime: RuntimeDep
) -> list[ApiKeyOut]:
    return [ApiKeyOut.of(key) for key in await runtime.accounts.list_api_keys(db, caller)]


@router.delete("/api-keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_api_key(
    key_id: uuid.UUID, caller: CurrentCaller, db: DbSession, runtime: RuntimeDep
) -> Response:
    await runtime.accounts.revoke_api_key(db, caller, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
