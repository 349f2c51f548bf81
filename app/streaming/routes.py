from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from app.auth.dependencies import Credential
from app.runtime import runtime_of
from app.streaming.service import MAX_CONTENT, ReplyInput
from app.streaming.sse import SSEReplyResponse

router = APIRouter(tags=["streaming"])


_EVENTS = [
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "error",
]
# One event of the stream (how OpenAPI tools read an event-stream schema); `data` is a JSON
# object whose `type` is the event's name. Anthropic's block events carry no `id`.
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"enum": _EVENTS},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"enum": _EVENTS}},
            },
        },
    },
}


class StreamRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(max_length=MAX_CONTENT)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)


@router.post(
    "/conversations/{conversation_id}/messages/stream",
    response_class=SSEReplyResponse,
    # Stated, not inferred: FastAPI reads the default from the response class's __init__, which
    # SSEReplyResponse does not take, and /openapi.json failed with a 500.
    status_code=200,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": SSE_EVENT_SCHEMA}},
            "description": "message_start, content_block_start, content_block_delta..., "
            "content_block_stop, message_delta, message_stop (or a final `error` event); "
            "`: ping` comment lines while the model is silent.",
        },
        401: {"description": "No or bad credentials"},
        404: {"description": "Conversation not found (or not yours)"},
        409: {"description": "A reply is already streaming in this conversation"},
        413: {"description": "Body too large"},
        422: {"description": "Invalid body"},
        429: {"description": "Rate limited (Retry-After) or quota exceeded"},
    },
)
async def stream_message(
    conversation_id: uuid.UUID, body: StreamRequest, request: Request, credential: Credential
) -> SSEReplyResponse:
    """Store `content` as the next user message and stream the model's reply as SSE."""
    runtime = runtime_of(request)
    reply = await runtime.replies.start(
        credential,
        conversation_id,
        ReplyInput(content=body.content, max_tokens=body.max_tokens, temperature=body.temperature),
    )
    return SSEReplyResponse(reply, keepalive_seconds=runtime.settings.stream_keepalive_seconds)
