"""Finding the caller: the one path from a bearer credential to a `Caller`, for every transport.

HTTP requests carry the credential (an access token or an API key) as `Authorization: Bearer
<credential>` or, as Anthropic's SDKs send their key, `x-api-key: <credential>`; when both are
there, `Authorization` wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.auth.service import Caller, parse_bearer
from app.deps import DbSession
from app.errors import Unauthenticated
from app.http import client_ip
from app.runtime import runtime_of

API_KEY_HEADER = "x-api-key"
_NOT_BEARER = (
    "The Authorization header must be 'Bearer <token>' (the word Bearer, a space, then the "
    "access token or API key)"
)

# Declared for the OpenAPI document (Swagger UI's Authorize button); the credential itself is
# read by `request_credential`, which says what is wrong with a malformed header.
_bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An access token (register / login) or an API key (createApiKey)",
)
_api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    scheme_name="apiKey",
    description="The same credential in Anthropic's header, for Anthropic's client libraries",
)


def credential_from_headers(headers: Mapping[str, str]) -> str | None:
    """The request's credential, if it carries a well-formed one."""
    credential = parse_bearer(headers.get("authorization"))
    if credential is None:
        credential = headers.get(API_KEY_HEADER, "").strip() or None
    return credential


def request_credential(headers: Mapping[str, str]) -> str | None:
    """The credential of a REST request; a malformed Authorization header is refused with a
    message that says how to write it, instead of the bare "Authentication required"."""
    header = headers.get("authorization")
    if header and header.strip() and parse_bearer(header) is None:
        raise Unauthenticated(_NOT_BEARER)
    return credential_from_headers(headers)


async def get_credential(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer_scheme)],
    _api_key: Annotated[str | None, Security(_api_key_scheme)],
) -> str | None:
    return request_credential(request.headers)


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


Credential = Annotated[str | None, Depends(get_credential)]


async def get_caller(request: Request, db: DbSession, credential: Credential) -> Caller:
    return await runtime_of(request).accounts.authenticate(db, credential)


CurrentCaller = Annotated[Caller, Depends(get_caller)]
ClientIp = Annotated[str | None, Depends(get_client_ip)]
