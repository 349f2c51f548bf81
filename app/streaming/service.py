"""THE reply pipeline. Both transports call `Replies.start` and render `Reply.events()`.

    reply = await replies.start(credential, conversation_id, content, ...)   # may raise AppError
    try:
        async for event in reply.events(): ...     # MessageStart, ContentBlockDelta*, ...
    finally:
        await reply.close()                        # idempotent; finalises if still open

`start` runs the contract's checks (caller, ownership, input, limits, one reply per conversation)
and commits the user message and the in-progress assistant row in one short transaction, before
the model is called. Nothing is held open while the model streams: the upstream is read by a
pump task into a buffer, the consumer takes whatever has arrived (so a slow client gets fewer,
larger deltas and a fast one gets every chunk as it lands), and a checkpoint task saves the text
so far every STREAM_CHECKPOINT_SECONDS in its own transaction. However the reply ends (complete,
client gone, upstream failure, shutdown) the assistant row is finalised in a transaction that
is shielded from cancellation, and the user's stream slot (USER_MAX_CONCURRENT_STREAMS) is given
back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.auth.service import Accounts, Caller
from app.config import Settings
from app.conversations import repository
from app.conversations.models import Conversation, Message
from app.db import is_unique_violation, unit_of_work, utcnow
from app.errors import (
    AppError,
    BadUserInput,
    Conflict,
    NotFound,
    QuotaExceeded,
    ServiceUnavailable,
    UpstreamError,
)
from app.llm.base import ChatMessage, ChatProvider, ChatRequest, Finish, ProviderError
from app.llm.models import ModelInfo, get_model
from app.llm.tokens import count_tokens_async
from app.ratelimit.service import Limits
from app.ratelimit.slots import StreamSlot
from app.streaming.checkpoints import Checkpointer, Progress
from app.streaming.events import (
    ContentBlockDelta,
    MessageDelta,
    MessageStart,
    MessageStop,
    StreamEvent,
)
from app.streaming.load import LoopLag
from app.streaming.prompt import Turn, plan_prompt
from app.usage.service import tokens_used_since

logger = structlog.get_logger(__name__)

MAX_CONTENT = 100_000
DEFAULT_MAX_TOKENS = 1024
MAX_TEMPERATURE = 2.0


@dataclass(frozen=True, slots=True)
class ReplyInput:
    content: str
    max_tokens: int | None = None
    temperature: float | None = None


def _check_content(content: str) -> None:
    if len(content) > MAX_CONTENT:
        raise BadUserInput(f"content must be at most {MAX_CONTENT} characters")
    if not content.strip():
        raise BadUserInput("content must not be blank")
    if "\x00" in content:  # PostgreSQL cannot store it: refused the same way on SQLite
        raise BadUserInput("content must not contain NUL characters")


def _validate(values: ReplyInput, model: ModelInfo) -> tuple[int, float | None]:
    max_tokens = values.max_tokens
    if max_tokens is None:
        max_tokens = min(DEFAULT_MAX_TOKENS, model.max_output_tokens)
    elif not 1 <= max_tokens <= model.max_output_tokens:
        raise BadUserInput(
            f"maxTokens (max_tokens) must be between 1 and {model.max_output_tokens} for {model.id}"
        )
    temperature = values.temperature
    if temperature is not None and not 0.0 <= temperature <= MAX_TEMPERATURE:
        raise BadUserInput(f"temperature must be between 0 and {MAX_TEMPERATURE}")
    return max_tokens, temperature


def _first_known(value: int | None, fallback: int) -> int:
    return value if value is not None else fallback


class _Pump:
    """Reads the upstream into a buffer in its own task; the consumer drains the buffer."""

    def __init__(
        self, provider: ChatProvider, request: ChatRequest, settings: Settings, lag: LoopLag
    ) -> None:
        self._provider = provider
        self._request = request
        self._lag = lag
        self._coalesce = settings.stream_coalesce_ms / 1000
        self._max_chars = settings.stream_max_output_chars
        self._deadline = time.monotonic() + settings.stream_max_seconds
        self.parts: list[str] = []  # every text chunk received, in order
        self.delivered = 0  # parts[:delivered] have been handed to the consumer
        self.chars = 0
        self.finish: Finish | None = None
        self.error: BaseException | None = None
        self.done = False
        self.request_id: str | None = None
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="reply-pump")

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _run(self) -> None:
        try:
            async with self._provider.stream(self._request) as stream:
                async for event in stream:
                    if isinstance(event, Finish):
                        self.finish = event
                        break
                    if not event.text:
                        continue
                    now = time.monotonic()
                    if self.first_token_at is None:
                        self.first_token_at = now
                        self.request_id = stream.request_id
                    self.last_token_at = now
                    # A model can be talked into emitting NUL, which PostgreSQL cannot store:
                    # the client and the database both get U+FFFD instead, so they still agree.
                    text = event.text.replace("\x00", "\ufffd")
                    self.parts.append(text)
                    self.chars += len(text)
                    self._wake()
                    if self.chars >= self._max_chars:
                        self.finish = Finish("max_tokens")
                        break
                    if now > self._deadline:
                        raise ProviderError("The reply took too long", kind="timeout_error")
                    if self._coalesce and self._lag.behind:
                        # The process is falling behind: let chunks pile up in the socket buffer
                        # so the next read carries many (one delta, one event) instead of one.
                        await asyncio.sleep(self._coalesce)
                self.request_id = stream.request_id
        except asyncio.CancelledError:
            self.error = asyncio.CancelledError()
            raise
        except ProviderError as error:
            self.error = error
        except Exception as error:  # noqa: BLE001  (surfaced to the consumer, which logs it)
            self.error = error
        finally:
            self.done = True
            self._wake()

    async def next_text(self) -> str | None:
        """Everything that arrived since the last call, joined; None once the upstream is done."""
        while self.delivered == len(self.parts) and not self.done:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.delivered == len(self.parts):
            return None
        pending = self.parts[self.delivered :]
        self.delivered = len(self.parts)
        return pending[0] if len(pending) == 1 else "".join(pending)

    def text(self) -> str:
        return "".join(self.parts)

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@dataclass(slots=True)
class _Outcome:
    finish_reason: str
    output_tokens: int | None = None
    input_tokens: int | None = None
    text_tokens: int | None = None  # tiktoken's count of the finished text, when already made


@dataclass(eq=False)
class Reply:
    """One streaming reply, from the stored user message to the finalised assistant message."""

    replies: Replies
    caller: Caller
    conversation_id: uuid.UUID
    assistant: Message
    model: ModelInfo
    provider: ChatProvider
    request: ChatRequest
    input_tokens: int
    started_at: float
    slot: StreamSlot  # one of the user's concurrent streams, given back when the reply closes
    _pump: _Pump | None = None
    _saved_parts: int = 0  # how many of the pump's parts the last checkpoint holds
    _closing: asyncio.Future[Message] | None = None
    _outcome_if_gone: _Outcome | None = None  # the real outcome, once the upstream has finished
    _shutdown: bool = False
    _events_started: bool = False
    _log: Any = field(default=None)

    @property
    def message_id(self) -> uuid.UUID:
        return self.assistant.id

    async def events(self) -> AsyncIterator[StreamEvent]:
        if self._events_started:
            raise RuntimeError("a reply's events can be iterated once")
        self._events_started = True
        if self._closing is not None:  # stopped by a shutdown before anyone read it
            raise ServiceUnavailable()
        settings = self.replies.settings
        pump = self._pump = _Pump(self.provider, self.request, settings, self.replies.load)
        pump.start()
        self.replies.checkpoints.task.ensure_running()
        self.replies.load.task.ensure_running()
        try:
            yield MessageStart(message=self.assistant, input_tokens=self.input_tokens)
            while (text := await pump.next_text()) is not None:
                yield ContentBlockDelta(message_id=self.message_id, text=text)
            if self._shutdown:
                await self.close("cancelled")
                raise ServiceUnavailable("The server is shutting down; the reply was stopped")
            if pump.error is not None:
                await self.close("error")
                raise self._upstream_error(pump.error)
            finish = pump.finish or Finish("end_turn")
            outcome = self._outcome_if_gone = await self._outcome(finish)
            yield MessageDelta(
                message_id=self.message_id,
                stop_reason=finish.stop_reason,
                stop_sequence=finish.stop_sequence,
                input_tokens=_first_known(outcome.input_tokens, self.input_tokens),
                output_tokens=outcome.output_tokens or 0,
                latency_ms=self._latency_ms(),
            )
            final = await self.close(outcome)
            yield MessageStop(message=final)
        finally:
            # Client gone, task cancelled, or an error above: finalise (no-op when already done).
            # A client that leaves after the model finished does not turn the reply into a
            # cancelled one: the text is complete.
            await self.close()

    def _upstream_error(self, error: BaseException) -> AppError:
        if isinstance(error, ProviderError):
            return UpstreamError(error.message, kind=error.kind)
        self._logger().error("reply_pump_failed", exc_info=error)
        return UpstreamError("The model provider failed")

    async def _outcome(self, finish: Finish) -> _Outcome:
        if finish.usage is not None:
            return _Outcome(
                finish.stop_reason, finish.usage.output_tokens, finish.usage.input_tokens
            )
        assert self._pump is not None
        # No usage from the provider: count the text once, for message_delta and for the row.
        tokens = await count_tokens_async(self._pump.text())
        return _Outcome(finish.stop_reason, output_tokens=tokens, text_tokens=tokens)

    def _latency_ms(self) -> int:
        end = self._pump.last_token_at if self._pump and self._pump.last_token_at else None
        return int(((end or time.monotonic()) - self.started_at) * 1000)

    def _logger(self) -> Any:
        if self._log is None:
            self._log = logger.bind(message_id=str(self.message_id))
        return self._log

    def progress(self) -> Progress | None:
        """What the next checkpoint should save for this reply (None before it streams)."""
        pump = self._pump
        if pump is None or self._closing is not None:
            return None
        parts = len(pump.parts)
        changed = parts != self._saved_parts

        def saved() -> None:
            self._saved_parts = max(self._saved_parts, parts)

        return Progress(
            user_id=self.caller.user_id,
            message_id=self.message_id,
            text=pump.text() if changed else None,
            saved=saved,
        )

    def _unit_of_work(self) -> AbstractAsyncContextManager[AsyncSession]:
        return unit_of_work(self.replies.sessionmaker, user_id=self.caller.user_id)

    def interrupt(self) -> None:
        """Server shutdown: finalise now (`cancelled`) without waiting for the consumer, which
        then finds the reply closed and ends its stream with an error."""
        self._shutdown = True
        self.replies.track(asyncio.ensure_future(self.close("cancelled")))

    async def close(self, outcome: _Outcome | str | None = None) -> Message:
        """Finalise the assistant message once; later calls return the same result.

        Without an outcome: the model's own when it had finished (a client that leaves after
        that does not turn a complete reply into a cancelled one), else `cancelled`.
        The work runs in its own task and is awaited through `shield`: when the caller is being
        cancelled (client gone, server stopping) the row is still written.
        """
        if self._closing is None:
            outcome = outcome or self._outcome_if_gone or "cancelled"
            if isinstance(outcome, str):
                outcome = _Outcome(outcome)
            self._closing = asyncio.ensure_future(self._finalise(outcome))
            self.replies.track(self._closing)
        return await asyncio.shield(self._closing)

    async def _finalise(self, outcome: _Outcome) -> Message:
        pump = self._pump
        if pump is not None:
            await pump.stop()
        try:
            text = pump.text() if pump else ""
            token_count = outcome.text_tokens
            if token_count is None:
                token_count = await count_tokens_async(text)
            output_tokens = _first_known(outcome.output_tokens, token_count)
            input_tokens = _first_known(outcome.input_tokens, self.input_tokens)
            ttft = None
            if pump is not None and pump.first_token_at is not None:
                ttft = int((pump.first_token_at - self.started_at) * 1000)
            metadata: dict[str, Any] = {
                "provider": self.provider.name,
                "time_to_first_token_ms": ttft,
                "provider_request_id": pump.request_id if pump else None,
                "prompt_input_tokens_estimate": self.input_tokens,
            }
            final = self.assistant  # detached: its events were rendered when they were sent
            final.content = text
            final.token_count = token_count
            final.finish_reason = outcome.finish_reason
            final.latency_ms = self._latency_ms()
            final.input_tokens = input_tokens
            final.output_tokens = output_tokens
            final.cost_usd = self.model.cost_usd(input_tokens, output_tokens)
            final.meta = metadata
            final.updated_at = utcnow()
            async with self._unit_of_work() as db:
                written = await repository.finalise_reply(db, final)
                if not written:  # finalised elsewhere (e.g. judged dead and interrupted)
                    final = await db.get(Message, self.message_id) or final
                await repository.touch_conversation(
                    db, self.caller.user_id, self.conversation_id, final.updated_at
                )
            self._logger().info(
                "reply_finished",
                finish_reason=outcome.finish_reason,
                output_tokens=output_tokens,
                latency_ms=self._latency_ms(),
            )
            return final
        finally:
            self.replies.forget(self)
            await self.slot.release()


class Replies:
    """Starts replies and keeps track of the live ones (for shutdown)."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        accounts: Accounts,
        providers: Mapping[str, ChatProvider],
        limits: Limits,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self._accounts = accounts
        self._providers = providers
        self._limits = limits
        self._live: set[Reply] = set()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._shutting_down = False
        self.checkpoints = Checkpointer(
            sessionmaker, settings.stream_checkpoint_seconds, self._progress
        )
        self.load = LoopLag(active=lambda: bool(self._live))

    def _progress(self) -> Iterator[Progress]:
        for reply in list(self._live):
            progress = reply.progress()
            if progress is not None:
                yield progress

    @property
    def live_count(self) -> int:
        return len(self._live)

    def track(self, task: asyncio.Future[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def forget(self, reply: Reply) -> None:
        self._live.discard(reply)

    async def start(
        self, credential: str | None, conversation_id: uuid.UUID, values: ReplyInput
    ) -> Reply:
        started_at = time.monotonic()
        if self._shutting_down:
            raise ServiceUnavailable()
        _check_content(values.content)
        slot: StreamSlot | None = None
        try:
            async with unit_of_work(self.sessionmaker) as db:
                caller = await self._accounts.authenticate(db, credential)
                await self._limits.check_reply_start(caller.user_id)
                found = await repository.conversation_for_reply(db, caller.user_id, conversation_id)
                if found is None:
                    raise NotFound("Conversation not found")
                conversation, reply_in_progress_checkpoint = found
                model = get_model(conversation.model)
                provider = self._providers.get(model.provider)
                if provider is None:
                    raise BadUserInput(f"Model {model.id} is not available on this server")
                max_tokens, temperature = _validate(values, model)
                await self._check_quota(db, caller)
                # Anything refused from here on (a conflict, a message too long for the context
                # window) gives the slot back below.
                slot = await self._limits.take_stream_slot(caller.user_id)
                # Counted only now: tokenising 100,000 characters is the costliest step before
                # the model, and must not be had by a caller who is unknown or refused.
                content_tokens = await count_tokens_async(values.content)
                if reply_in_progress_checkpoint is not None:
                    await self._clear_stale_reply(
                        db, caller, conversation_id, reply_in_progress_checkpoint
                    )
                request, input_tokens = await self._prompt(
                    db, conversation, model, values.content, content_tokens, max_tokens, temperature
                )
                assistant = await self._store_turn(
                    db, caller, conversation, values.content, content_tokens
                )
        except BaseException:
            if slot is not None:
                await slot.release()
            raise
        reply = Reply(
            replies=self,
            caller=caller,
            conversation_id=conversation_id,
            assistant=assistant,
            model=model,
            provider=provider,
            request=request,
            input_tokens=input_tokens,
            started_at=started_at,
            slot=slot,
        )
        self._live.add(reply)
        if self._shutting_down:  # shutdown began while this reply was starting: it missed it
            reply.interrupt()
        return reply

    async def _check_quota(self, db: AsyncSession, caller: Caller) -> None:
        budget = self.settings.user_daily_token_budget
        if not budget:
            return
        now = datetime.now(UTC)
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if await tokens_used_since(db, caller.user_id, day) >= budget:
            reset = day + timedelta(days=1)
            raise QuotaExceeded(reset_at=reset, retry_after=(reset - now).total_seconds())

    async def _clear_stale_reply(
        self,
        db: AsyncSession,
        caller: Caller,
        conversation_id: uuid.UUID,
        last_checkpoint: datetime,
    ) -> None:
        """Refuse while a live reply streams; mark one left by a dead process `interrupted`."""
        before = utcnow() - self.settings.stale_reply_after
        if last_checkpoint >= before:
            raise Conflict("A reply is already being generated in this conversation")
        await repository.interrupt_stale_replies(db, caller.user_id, [conversation_id], before)
        logger.warning("stale_reply_interrupted", conversation_id=str(conversation_id))

    async def _prompt(
        self,
        db: AsyncSession,
        conversation: Conversation,
        model: ModelInfo,
        content: str,
        content_tokens: int,
        max_tokens: int,
        temperature: float | None,
    ) -> tuple[ChatRequest, int]:
        system = conversation.system_prompt
        history = await repository.history_turns(db, conversation.id)
        plan = plan_prompt(
            system_tokens=await count_tokens_async(system) if system else None,
            new_message_tokens=content_tokens,
            history_newest_first=[Turn(row.id, row.role, row.token_count) for row in history],
            context_window=model.context_window,
            max_tokens=max_tokens,
        )
        contents = await repository.message_contents(db, plan.kept)
        roles = {row.id: row.role for row in history}
        messages = [ChatMessage("system", system)] if system else []
        messages += [ChatMessage(roles[mid], contents[mid]) for mid in plan.kept]
        messages.append(ChatMessage("user", content))
        request = ChatRequest(
            model=model.id, messages=messages, max_tokens=max_tokens, temperature=temperature
        )
        return request, plan.input_tokens

    async def _store_turn(
        self,
        db: AsyncSession,
        caller: Caller,
        conversation: Conversation,
        content: str,
        content_tokens: int,
    ) -> Message:
        now = utcnow()
        user_message = Message(
            conversation_id=conversation.id,
            user_id=caller.user_id,
            role="user",
            content=content,
            token_count=content_tokens,
            meta={},
            created_at=now,
            updated_at=now,
        )
        # One microsecond later: the reply sorts after its question even on equal clocks.
        later = now + timedelta(microseconds=1)
        assistant = Message(
            conversation_id=conversation.id,
            user_id=caller.user_id,
            role="assistant",
            content="",
            token_count=0,
            model=conversation.model,
            meta={},
            created_at=later,
            updated_at=later,
        )
        db.add_all([user_message, assistant])
        conversation.updated_at = later
        try:
            await db.flush()
        except IntegrityError as error:
            # The transaction is spoiled; raising rolls the whole unit of work back.
            if is_unique_violation(error):  # another process started a reply a moment ago
                raise Conflict("A reply is already being generated in this conversation") from error
            raise NotFound("Conversation not found") from error  # deleted meanwhile
        return assistant

    async def shutdown(self) -> None:
        """Stop every live reply (finalised as `cancelled`) and wait for their rows."""
        self._shutting_down = True
        for reply in list(self._live):
            reply.interrupt()
        await self._drain()
        await self.checkpoints.task.stop()
        await self.load.task.stop()

    async def _drain(self) -> None:
        while self._live or self._tasks:
            pending = list(self._tasks)
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            else:
                await asyncio.sleep(0.01)
