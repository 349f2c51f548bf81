"""The one error hierarchy. Services raise these; each transport renders them its own way.

- REST: status `status`, body `{"error": {"type": <type>, "message": <message>}}`.
- GraphQL: `extensions.code` = `code` (plus `retryAfter` / `resetAt` where they apply).
- Streams: a terminal `error` event whose `error.type` is `type`.

Anything that is not an `AppError` is unexpected: it is logged with the request id and shown to
clients only as `INTERNAL_SERVER_ERROR`.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, ClassVar


class AppError(Exception):
    code: ClassVar[str] = "INTERNAL_SERVER_ERROR"
    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    default_message: ClassVar[str] = "Internal server error"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)

    def extensions(self) -> dict[str, Any]:
        return {"code": self.code}

    def headers(self) -> dict[str, str]:
        return {}


class Unauthenticated(AppError):
    code = "UNAUTHENTICATED"
    status = 401
    type = "authentication_error"
    default_message = "Authentication required"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(AppError):
    code = "FORBIDDEN"
    status = 403
    type = "permission_error"
    default_message = "Not allowed"


class NotFound(AppError):
    code = "NOT_FOUND"
    status = 404
    type = "not_found_error"
    default_message = "Not found"


class BadUserInput(AppError):
    code = "BAD_USER_INPUT"
    status = 422
    type = "invalid_request_error"
    default_message = "Invalid input"


class Conflict(AppError):
    code = "CONFLICT"
    status = 409
    type = "conflict_error"
    default_message = "Conflict"


class PayloadTooLarge(AppError):
    code = "BAD_USER_INPUT"
    status = 413
    type = "request_too_large"
    default_message = "Request body too large"


class RateLimited(AppError):
    code = "RATE_LIMITED"
    status = 429
    type = "rate_limit_error"
    default_message = "Too many requests"

    def __init__(self, retry_after: float, message: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))

    def extensions(self) -> dict[str, Any]:
        return {"code": self.code, "retryAfter": self.retry_after}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class QuotaExceeded(AppError):
    code = "QUOTA_EXCEEDED"
    status = 429
    type = "quota_exceeded_error"
    default_message = "Token budget for the period is spent"

    def __init__(self, reset_at: datetime, retry_after: float, message: str | None = None) -> None:
        super().__init__(message)
        self.reset_at = reset_at
        self.retry_after = max(1, math.ceil(retry_after))

    def extensions(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "resetAt": self.reset_at.isoformat(),
            "retryAfter": self.retry_after,
        }

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class UpstreamError(AppError):
    """The model provider failed, refused or timed out. `type` says which, for SSE clients."""

    code = "UPSTREAM_ERROR"
    status = 502
    type = "upstream_error"
    default_message = "The model provider failed"

    def __init__(self, message: str | None = None, *, kind: str = "upstream_error") -> None:
        super().__init__(message)
        self.kind = kind

    def extensions(self) -> dict[str, Any]:
        return {"code": self.code, "type": self.kind}


class ServiceUnavailable(AppError):
    code = "INTERNAL_SERVER_ERROR"
    status = 503
    type = "overloaded_error"
    default_message = "The service is shutting down; retry shortly"
