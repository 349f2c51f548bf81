"""REST error rendering and the HTTP middleware every route shares.

Every REST error body is `{"error": {"type": ..., "message": ...}}`. Validation errors keep a
readable message; unexpected errors are logged with the request id and masked.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import AppError, PayloadTooLarge

logger = structlog.get_logger(__name__)

INTERNAL_MESSAGE = "Internal server error"

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "request_too_large",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    """Every REST error: `{"error": {"type": ..., "message": ...}}`."""

    error: ErrorDetail


def _documented(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


# What any /api/v1 route may answer besides its own statuses; documented so that the OpenAPI
# document describes the error body clients actually get (FastAPI's default 422 does not).
# 401 and 413 depend on the route: app/openapi.py adds them where they apply.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: _documented("Invalid input"),
    429: _documented("Rate limited or quota exceeded (see Retry-After)"),
}


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message}}


def error_response(error: AppError) -> JSONResponse:
    return JSONResponse(
        error_body(error.type, error.message), status_code=error.status, headers=error.headers()
    )


def _describe_validation(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        parts.append(f"{location}: {item.get('msg')}" if location else str(item.get("msg")))
    return "; ".join(parts) or "Invalid request"


def client_ip(connection: HTTPConnection, trusted_proxy_hops: int) -> str | None:
    """The client's address, as far as it can be trusted.

    With no trusted proxies it is the socket's peer: X-Forwarded-For is written by the client and
    proves nothing. Each trusted proxy appends the address it saw to X-Forwarded-For, so with N of
    them the client is the N-th entry from the right; anything left of it is the client's own.
    """
    peer = connection.client.host if connection.client else None
    if trusted_proxy_hops == 0:
        return peer
    forwarded = [
        entry.strip()
        for header in connection.headers.getlist("x-forwarded-for")
        for entry in header.split(",")
        if entry.strip()
    ]
    if not forwarded:
        return peer
    candidate = forwarded[-min(trusted_proxy_hops, len(forwarded))]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:  # a proxy would not write garbage: someone else did
        return peer


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, error: AppError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            error_body("invalid_request_error", _describe_validation(error)), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            error_body(_STATUS_TYPES.get(error.status_code, "api_error"), str(error.detail)),
            status_code=error.status_code,
            headers=error.headers,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        # Only errors of the outer middleware get here; UnexpectedErrorMiddleware has the rest.
        logger.error("unexpected_error", path=request.url.path, exc_info=error)
        return JSONResponse(error_body("api_error", INTERNAL_MESSAGE), status_code=500)


class UnexpectedErrorMiddleware:
    """Answers an exception that escaped a route with the masked 500, inside the other middleware.

    Starlette answers unhandled exceptions from its outermost layer, outside the request-id and
    security-header middleware: clients got a 500 without the X-Request-ID to quote, and the
    error was logged twice. Answered here, the 500 carries both headers and is logged once, with
    the request id bound to the log line.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            logger.error("unexpected_error", path=scope.get("path"), exc_info=error)
            if response_started:  # too late for a status: the server drops the connection
                raise
            response = JSONResponse(error_body("api_error", INTERNAL_MESSAGE), status_code=500)
            await response(scope, receive, send)


class SecurityHeadersMiddleware:
    """Headers that suit a JSON API; GraphiQL's page gets a policy that lets it run its scripts."""

    API_HEADERS = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.headers = list(self.API_HEADERS)
        if hsts:
            self.headers.append(
                (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RequestBodyLimitMiddleware:
    """HTTP 413 for a request body larger than `max_bytes`, before the app has buffered it.

    A declared Content-Length is refused at once, without reading a byte. A chunked body is
    counted as it streams in: at the first byte past the limit the 413 goes out, the app is told
    the client went away, and whatever it answers to that is dropped.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> JSONResponse:
        error = PayloadTooLarge(f"Request body must be at most {self.max_bytes} bytes")
        # The rest of the body is never read, so the connection cannot carry another request.
        return JSONResponse(
            error_body(error.type, error.message),
            status_code=error.status,
            headers={"Connection": "close"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._too_large()(scope, receive, send)
                return

        received = 0
        refused = False
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not response_started:
                        await self._too_large()(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused and not response_started:
                return  # the 413 went out already
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            # The app failed on the body that was cut off; the client has its 413.
            if not refused:
                raise
