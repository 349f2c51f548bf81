"""Finding the caller: the one path from a bearer credential to a `Caller`, for every transport."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Request

from app.auth.service import Caller, parse_bearer
from app.deps import DbSession
from app.http import client_ip
from app.runtime import runtime_of


def credential_from_headers(headers: Mapping[str, str]) -> str | None:
    return parse_bearer(headers.get("authorization"))


def credential_from_connection_params(params: Mapping[str, Any] | None) -> str | None:
    """The credential in a websocket `connection_init` payload, in any of the accepted shapes."""
    if not params:
        return None
    nested = params.get("headers")  # some clients (Apollo's) nest the headers one level down
    for source in (params, nested if isinstance(nested, Mapping) else {}):
        for key in ("Authorization", "authorization"):
            value = source.get(key)
            if isinstance(value, str):
                return parse_bearer(value)
    token = params.get("token")
    if isinstance(token, str) and token.strip():
        return token.strip()
    return None


def get_client_ip(request: Request) -> str | None:
    """The client's address for per-IP limits (see `app.http.client_ip` on proxies)."""
    return client_ip(request, runtime_of(request).settings.trusted_proxy_hops)


async def get_caller(request: Request, db: DbSession) -> Caller:
    credential = credential_from_headers(request.headers)
    return await runtime_of(request).accounts.authenticate(db, credential)


CurrentCaller = Annotated[Caller, Depends(get_caller)]
ClientIp = Annotated[str | None, Depends(get_client_ip)]
