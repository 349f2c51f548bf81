from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.db import ping
from app.runtime import runtime_of

router = APIRouter(tags=["health"])

READINESS_TIMEOUT_SECONDS = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers. Never touches the database."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 only when the database answers."""
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS):
            await ping(runtime_of(request).engine)
    except Exception:  # noqa: BLE001  (any failure means "not ready"; the reason is not for clients)
        return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "up"})
