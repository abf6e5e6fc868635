"""POST /v1/responses, a stream: a chat stream's chunks -> the Responses API's typed events,
framed as SSE (`event:` and `data:`), handed to `sse.relay` as its `Frames`.

Shapes: openapi.yaml `ResponseCreatedEvent` ... `ResponseCompletedEvent`, `ResponseFailedEvent`
(each with `sequence_number`, from 0); the order is the one openai-python's
`responses.stream()` helper accumulates (`lib/streaming/responses/_responses.py`:
`response.created` first, an item's `output_item.added` before its deltas, every item done
before `response.completed`).

A stream that fails after its commit point ends with `response.failed` (status `failed`, the
items so far as they were), never `response.completed`: no truncated success, as a chat stream
ends with an error event and no `[DONE]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from mana_llm import errors
from mana_llm.api.responses_answer import (
    INCOMPLETE,
    Answer,
    FunctionCallItem,
    OutputItem,
    OutputMessage,
    ReasoningItem,
    content_part,
    mapping,
    new_id,
    reasoning_text,
    usage_object,
)
from mana_llm.codec import dumps
from mana_llm.domain import JSON, StreamChunk


def _code(error: errors.GatewayError) -> str:
    """The Responses error code (a closed enum in the spec) for a gateway failure."""
    return "rate_limit_exceeded" if error.status == 429 else "server_error"


@attrs.define(eq=False)
class ResponsesFrames:
    """One Responses stream's events, from the chat chunks the relay hands over (`sse.Frames`).
    `chunks` frames what a read brought; `done` and `failed` frame the last send."""

    answer: Answer
    model: str  # the requested model until a chunk names the one answering
    _seq: int = 0
    _started: bool = False
    _items: list[OutputItem] = attrs.Factory(list)
    _text: OutputMessage | None = None
    _thought: ReasoningItem | None = None
    _calls: dict[int, FunctionCallItem] = attrs.Factory(dict)
    _open: list[OutputItem] = attrs.Factory(list)
    _closed: dict[int, str] = attrs.Factory(dict)  # output index -> the status it ended in
    _usage: JSON | None = None
    _finish: str | None = None

    def _event(self, kind: str, fields: JSON) -> bytes:
        fields["type"] = kind
        fields["sequence_number"] = self._seq
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + dumps(fields) + b"\n\n"

    def _start(self, out: list[bytes]) -> None:
        if not self._started:
            self._started = True
            created = self.answer.response(self.model, "in_progress", [])
            out.append(self._event("response.created", {"response": created}))
            out.append(self._event("response.in_progress", {"response": created}))

    def chunks(self, chunks: list[StreamChunk]) -> bytes:
        out: list[bytes] = []
        for chunk in chunks:
            payload = chunk.payload
            if isinstance(payload.get("model"), str) and payload["model"]:
                self.model = payload["model"]
            self._start(out)
            if chunk.usage is not None:
                self._usage = usage_object(payload.get("usage"))
            if chunk.finish_reason is not None:
                self._finish = chunk.finish_reason
            for choice in payload.get("choices") or ():
                delta = choice.get("delta") if isinstance(choice, Mapping) else None
                if isinstance(delta, Mapping):
                    self._delta(delta, out)
        return b"".join(out)

    def _delta(self, delta: Mapping[str, Any], out: list[bytes]) -> None:
        thought = reasoning_text(delta)
        if thought:
            self._reason(thought, out)
        for kind in ("refusal", "content"):
            text = delta.get(kind)
            if isinstance(text, str) and text:
                self._say("refusal" if kind == "refusal" else "output_text", text, out)
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, Mapping):
                self._call(call, out)

    def _add(self, item: OutputItem, out: list[bytes]) -> None:
        self._items.append(item)
        self._open.append(item)
        added = {"output_index": item.index, "item": item.item("in_progress")}
        out.append(self._event("response.output_item.added", added))

    def _reason(self, text: str, out: list[bytes]) -> None:
        thought = self._thought
        if thought is None or thought not in self._open:  # none yet, or words came between
            thought = self._thought = ReasoningItem(len(self._items))
            self._add(thought, out)
            out.append(self._event("response.reasoning_summary_part.added", self._summary(thought)))
        thought.text += text
        delta = {"item_id": thought.id, "output_index": thought.index, "summary_index": 0}
        out.append(self._event("response.reasoning_summary_text.delta", delta | {"delta": text}))

    def _summary(self, thought: ReasoningItem) -> JSON:
        return {
            "item_id": thought.id,
            "output_index": thought.index,
            "summary_index": 0,
            "part": {"type": "summary_text", "text": thought.text},
        }

    def _say(self, kind: str, text: str, out: list[bytes]) -> None:
        self._close_thought(out)
        message = self._text
        if message is None:
            message = self._text = OutputMessage(len(self._items))
            self._add(message, out)
        if not message.parts or message.parts[-1][0] != kind:
            message.parts.append([kind, ""])
            added = self._where(message) | {"part": content_part(kind, "")}
            out.append(self._event("response.content_part.added", added))
        message.parts[-1][1] += text
        name = "response.refusal.delta" if kind == "refusal" else "response.output_text.delta"
        extra = {"delta": text} if kind == "refusal" else {"delta": text, "logprobs": []}
        out.append(self._event(name, self._where(message) | extra))

    @staticmethod
    def _where(message: OutputMessage) -> JSON:
        index = len(message.parts) - 1
        return {"item_id": message.id, "output_index": message.index, "content_index": index}

    def _call(self, call: Mapping[str, Any], out: list[bytes]) -> None:
        index = call.get("index", 0)
        function = mapping(call.get("function"))
        opened = self._calls.get(index) if isinstance(index, int) else None
        if opened is None:
            self._close_thought(out)
            if self._text is not None:  # words before the calls: that message is over
                self._close(self._text, out)
                self._text = None
            call_id = call.get("id")
            opened = FunctionCallItem(
                len(self._items),
                call_id if isinstance(call_id, str) and call_id else new_id("call"),
                str(function.get("name") or ""),
            )
            self._calls[index if isinstance(index, int) else len(self._calls)] = opened
            self._add(opened, out)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            opened.arguments += arguments
            delta = {"item_id": opened.id, "output_index": opened.index, "delta": arguments}
            out.append(self._event("response.function_call_arguments.delta", delta))

    def _close_thought(self, out: list[bytes]) -> None:
        if self._thought is not None and self._thought in self._open:
            self._close(self._thought, out)

    def _close(self, item: OutputItem, out: list[bytes]) -> None:
        self._open.remove(item)
        status = self._closed[item.index] = (
            "incomplete" if self._finish in INCOMPLETE else "completed"
        )
        at = {"output_index": item.index}
        if isinstance(item, ReasoningItem):
            summary = self._summary(item)
            text_done = {k: v for k, v in summary.items() if k != "part"} | {"text": item.text}
            out.append(self._event("response.reasoning_summary_text.done", text_done))
            out.append(self._event("response.reasoning_summary_part.done", summary))
        elif isinstance(item, FunctionCallItem):
            done = at | {"item_id": item.id, "name": item.name, "arguments": item.arguments}
            out.append(self._event("response.function_call_arguments.done", done))
        else:
            for index, (kind, text) in enumerate(item.parts):
                where = {"item_id": item.id, "output_index": item.index, "content_index": index}
                if kind == "refusal":
                    out.append(self._event("response.refusal.done", where | {"refusal": text}))
                else:
                    fields = where | {"text": text, "logprobs": []}
                    out.append(self._event("response.output_text.done", fields))
                part = {"part": content_part(kind, text)}
                out.append(self._event("response.content_part.done", where | part))
        out.append(self._event("response.output_item.done", at | {"item": item.item(status)}))

    def _output(self, status: str) -> list[JSON]:
        """The items: those still open in `status`, the others as they were closed."""
        return [item.item(self._closed.get(item.index, status)) for item in self._items]

    def done(self) -> bytes:
        out: list[bytes] = []
        self._start(out)
        if not self._items:  # an answer with no words: still one (empty) message
            self._empty_message(out)
        for item in sorted(self._open, key=lambda i: i.index):
            self._close(item, out)
        final = self.answer.response(
            self.model, "completed", self._output("completed"), self._usage, self._finish
        )
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        out.append(self._event(kind, {"response": final}))
        return b"".join(out)

    def _empty_message(self, out: list[bytes]) -> None:
        message = self._text = OutputMessage(len(self._items))
        self._add(message, out)
        message.parts.append(["output_text", ""])
        added = self._where(message) | {"part": content_part("output_text", "")}
        out.append(self._event("response.content_part.added", added))

    def failed(self, error: errors.GatewayError) -> bytes:
        out: list[bytes] = []
        self._start(out)
        cause = {"code": _code(error), "message": error.message}
        final = self.answer.response(
            self.model, "failed", self._output("incomplete"), self._usage, error=cause
        )
        out.append(self._event("response.failed", {"response": final}))
        return b"".join(out)
