from __future__ import annotations

from datetime import datetime

import strawberry

from app.auth.models import ApiKey, User
from app.auth.service import Session
from app.graphql.context import Info
from app.graphql.ids import parse_id


@strawberry.type(name="User")
class UserType:
    id: strawberry.ID
    email: str
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserType:
        return cls(id=strawberry.ID(str(user.id)), email=user.email, created_at=user.created_at)


@strawberry.type
class AuthPayload:
    access_token: str
    token_type: str
    expires_in: int
    user: UserType

    @classmethod
    def of(cls, session: Session) -> AuthPayload:
        return cls(
            access_token=session.access_token,
            token_type="bearer",  # noqa: S106  (OAuth token type, not a secret)
            expires_in=session.expires_in,
            user=UserType.of(session.user),
        )


@strawberry.type(name="ApiKey")
class ApiKeyType:
    id: strawberry.ID
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyType:
        return cls(
            id=strawberry.ID(str(key.id)),
            name=key.name,
            prefix=key.prefix,
            created_at=key.created_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
        )


@strawberry.type
class ApiKeyCreated:
    api_key: ApiKeyType
    secret: str = strawberry.field(description="Shown once: only its hash is stored.")


@strawberry.input
class RegisterInput:
    email: str
    password: str


@strawberry.input
class LoginInput:
    email: str
    password: str


@strawberry.type
class AuthQuery:
    @strawberry.field
    async def me(self, info: Info) -> UserType:
        caller = await info.context.caller()
        return UserType.of(await info.context.runtime.accounts.me(info.context.db, caller))

    @strawberry.field
    async def api_keys(self, info: Info) -> list[ApiKeyType]:
        caller = await info.context.caller()
        keys = await info.context.runtime.accounts.list_api_keys(info.context.db, caller)
        return [ApiKeyType.of(key) for key in keys]


@strawberry.type
class AuthMutation:
    @strawberry.mutation
    async def register(self, info: Info, input: RegisterInput) -> AuthPayload:
        session = await info.context.runtime.accounts.register(
            info.context.db, input.email, input.password, client_ip=info.context.client_ip
        )
        return AuthPayload.of(session)

    @strawberry.mutation
    async def login(self, info: Info, input: LoginInput) -> AuthPayload:
        session = await info.context.runtime.accounts.login(
            info.context.db, input.email, input.password, client_ip=info.context.client_ip
        )
        return AuthPayload.of(session)

    @strawberry.mutation
    async def create_api_key(self, info: Info, name: str) -> ApiKeyCreated:
        caller = await info.context.caller()
        key, secret = await info.context.runtime.accounts.create_api_key(
            info.context.db, caller, name
        )
        return ApiKeyCreated(api_key=ApiKeyType.of(key), secret=secret)

    @strawberry.mutation
    async def revoke_api_key(self, info: Info, id: strawberry.ID) -> bool:
        caller = await info.context.caller()
        await info.context.runtime.accounts.revoke_api_key(
            info.context.db, caller, parse_id(id, "API key id")
        )
        return True
