"""In-memory providers behind the Provider protocol, scripted step by step, for walk tests
under MockClock. Each call records (what, model, virtual time)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import attrs
import trio

from mana_llm import errors
from mana_llm.domain import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelInfo,
    StreamChunk,
    Target,
    Usage,
)


@attrs.frozen
class Answer:
    text: str = "ok"


@attrs.frozen
class Fail:
    error: BaseException


@attrs.frozen
class Hang:
    """Never answer (until cancelled)."""


@attrs.frozen
class Sleep:
    seconds: float


@attrs.frozen
class Content:
    text: str


@attrs.frozen
class RoleOnly:
    """A chunk with a role and empty content: does not commit."""


@attrs.frozen
class Finish:
    reason: str = "stop"


@attrs.frozen
class End:
    """The upstream closes the stream."""


ChatStep = Answer | Fail | Hang | Sleep
StreamStep = Content | RoleOnly | Finish | End | Fail | Sleep | Hang


def chunk_payload(
    target: Target, delta: dict[str, str], finish: str | None = None
) -> dict[str, object]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": target.resolved,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


async def perform(step: object) -> bool:
    """Wait, hang or fail as a Sleep, Hang or Fail step says; False for any other step."""
    if isinstance(step, Sleep):
        await trio.sleep(step.seconds)
        return True
    if isinstance(step, Hang):
        await trio.sleep_forever()
    if isinstance(step, Fail):
        raise step.error
    return False


@attrs.define(eq=False)
class FakeStream:
    target: Target
    steps: deque[StreamStep]
    closed: bool = False

    async def receive(self) -> list[StreamChunk]:
        while self.steps:
            step = self.steps.popleft()
            if await perform(step):
                continue
            if isinstance(step, End):
                return []
            if isinstance(step, Content):
                return [
                    StreamChunk(chunk_payload(self.target, {"content": step.text}), commits=True)
                ]
            if isinstance(step, RoleOnly):
                return [
                    StreamChunk(chunk_payload(self.target, {"role": "assistant", "content": ""}))
                ]
            assert isinstance(step, Finish)
            payload = chunk_payload(self.target, {}, step.reason)
            return [StreamChunk(payload, finish_reason=step.reason)]
        return []

    async def aclose(self) -> None:
        self.closed = True


@attrs.define(eq=False)
class FakeProvider:
    name: str
    configured: bool = True
    key_env: str | None = None
    timeout_s: float = 30.0
    chat_steps: deque[Sequence[ChatStep]] = attrs.field(factory=deque)
    stream_steps: deque[Sequence[StreamStep]] = attrs.field(factory=deque)
    prepare_steps: deque[Sequence[ChatStep]] = attrs.field(factory=deque)
    prepared: list[float] = attrs.field(factory=list)  # when prepare() ran
    calls: list[tuple[str, str, float]] = attrs.field(factory=list)
    streams: list[FakeStream] = attrs.field(factory=list)

    def script_chat(self, *steps: ChatStep) -> FakeProvider:
        self.chat_steps.append(steps)
        return self

    def script_stream(self, *steps: StreamStep) -> FakeProvider:
        self.stream_steps.append(steps)
        return self

    async def prepare(self, request: ChatRequest) -> ChatRequest:
        self.prepared.append(trio.current_time())
        for step in self.prepare_steps.popleft() if self.prepare_steps else ():
            await perform(step)
        return request

    async def chat(self, target: Target, request: ChatRequest) -> ChatResponse:
        self.calls.append(("chat", target.resolved, trio.current_time()))
        for step in self.chat_steps.popleft() if self.chat_steps else (Answer(),):
            if not await perform(step):
                assert isinstance(step, Answer)
                message = {"role": "assistant", "content": step.text, "refusal": None}
                payload = {"model": target.resolved, "choices": [{"index": 0, "message": message}]}
                return ChatResponse(payload, "stop", Usage(1, 1))
        raise AssertionError("a chat script must end with Answer, Fail or Hang")

    async def open_stream(self, target: Target, request: ChatRequest) -> FakeStream:
        self.calls.append(("stream", target.resolved, trio.current_time()))
        steps = (
            self.stream_steps.popleft() if self.stream_steps else (Content("ok"), Finish(), End())
        )
        opening: deque[StreamStep] = deque(steps)
        while opening and isinstance(opening[0], Fail | Sleep | Hang):
            await perform(opening.popleft())  # failures and waits before the response headers
        stream = FakeStream(target, opening)
        self.streams.append(stream)
        return stream

    async def embed(self, target: Target, request: EmbeddingRequest) -> EmbeddingResponse:
        raise NotImplementedError

    async def list_models(self) -> tuple[ModelInfo, ...]:
        self.calls.append(("models", self.name, trio.current_time()))
        for step in self.chat_steps.popleft() if self.chat_steps else (Answer(),):
            await perform(step)
        return (ModelInfo(f"{self.name}/m", 0, self.name),)

    async def probe(self) -> None:
        """Scripted with script_chat, like a chat call: Answer succeeds, Fail/Hang/Sleep act."""
        self.calls.append(("probe", self.name, trio.current_time()))
        for step in self.chat_steps.popleft() if self.chat_steps else (Answer(),):
            await perform(step)


def unavailable(provider: str, message: str = "boom") -> errors.UpstreamUnavailable:
    return errors.UpstreamUnavailable(message, provider=provider)
