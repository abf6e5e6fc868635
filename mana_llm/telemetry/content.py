"""What an attempt span says about the request and the answer (the GenAI conventions'
attributes, semantic-conventions-genai docs/gen-ai/client-inference.md), and, only with
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true, the messages themselves as the
conventions' opt-in event `gen_ai.client.inference.operation.details` with
`gen_ai.input.messages` / `gen_ai.output.messages` (role and parts, as JSON strings: span
events in OpenTelemetry Python take no nested values, the case the conventions allow a JSON
string for).

Captured content is bounded: each text part is cut to MAX_PART_CHARS characters (ending in
`…[truncated]`), and only the last MAX_MESSAGES messages of the input are kept. Images are
named, never inlined. A streamed answer's text is not captured (the relay keeps no copy of
it): its event holds the input only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from opentelemetry.trace import Span

from mana_llm.domain import ChatRequest, Target, Usage
from mana_llm.routing.operations import Buffered, Stream

MAX_PART_CHARS = 4096
MAX_MESSAGES = 32
TRUNCATED = "…[truncated]"
DETAILS = "gen_ai.client.inference.operation.details"


def request_attributes(chat: ChatRequest | None, attempt: Any) -> dict[str, Any]:
    """The request's parameters the conventions name, where the caller set them."""
    found: dict[str, Any] = {}
    if isinstance(attempt, Stream | Buffered):  # "if and only if the request is streaming"
        found["gen_ai.request.stream"] = True
    if chat is None:
        return found
    for key, value in (
        ("gen_ai.request.max_tokens", chat.max_tokens),
        ("gen_ai.request.temperature", chat.temperature),
        ("gen_ai.request.top_p", chat.top_p),
        ("gen_ai.request.seed", chat.seed),
        ("gen_ai.request.reasoning.level", chat.reasoning_effort),
    ):
        if value is not None:
            found[key] = value
    if chat.stop:
        found["gen_ai.request.stop_sequences"] = list(chat.stop)
    return found


def response_attributes(
    span: Span, payload: Mapping[str, Any], usage: Usage | None, target: Target
) -> None:
    """The answer's id, its model when the upstream named another than was asked for, finish
    reasons and token counts, set at once (each `set_attribute` takes the span's lock)."""
    found: dict[str, Any] = {}
    if isinstance(payload.get("id"), str):
        found["gen_ai.response.id"] = payload["id"]
    model = payload.get("model")
    if isinstance(model, str) and model not in (target.resolved, target.model):
        found["gen_ai.response.model"] = model
    choices = payload.get("choices")
    reasons = [
        c["finish_reason"]
        for c in (choices if isinstance(choices, list) else ())
        if isinstance(c, Mapping) and isinstance(c.get("finish_reason"), str)
    ]
    if reasons:
        found["gen_ai.response.finish_reasons"] = reasons
    if usage is not None:
        found["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        found["gen_ai.usage.output_tokens"] = usage.completion_tokens
    span.set_attributes(found)


def stream_attributes(span: Span, usage: Usage | None, finish_reason: str | None) -> None:
    found: dict[str, Any] = {}
    if finish_reason is not None:
        found["gen_ai.response.finish_reasons"] = [finish_reason]
    if usage is not None:
        found["gen_ai.usage.input_tokens"] = usage.prompt_tokens
        found["gen_ai.usage.output_tokens"] = usage.completion_tokens
    span.set_attributes(found)


def _text(text: str) -> str:
    if len(text) <= MAX_PART_CHARS:
        return text
    return text[: MAX_PART_CHARS - len(TRUNCATED)] + TRUNCATED


def _parts(message: Any) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if message.content:
        parts.append({"type": "text", "content": _text(message.content)})
    parts.extend({"type": "uri", "modality": "image"} for _ in message.images)
    for call in message.tool_calls:
        parts.append(
            {
                "type": "tool_call",
                "id": call.id,
                "name": call.name,
                "arguments": _text(call.arguments),
            }
        )
    if message.tool_call_id is not None:
        parts = [{"type": "tool_call_response", "id": message.tool_call_id, "response": parts}]
    return parts


def record_input(span: Span, chat: ChatRequest, operation: str, provider: str) -> None:
    messages = [{"role": m.role, "parts": _parts(m)} for m in chat.messages[-MAX_MESSAGES:]]
    span.add_event(
        DETAILS,
        {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": provider,
            "gen_ai.input.messages": json.dumps(messages, ensure_ascii=False),
        },
    )


def record_output(span: Span, payload: Mapping[str, Any]) -> None:
    choices = payload.get("choices")
    messages = []
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, Mapping) else None
        if not isinstance(message, Mapping):
            continue
        text = message.get("content")
        parts = [{"type": "text", "content": _text(text)}] if isinstance(text, str) else []
        messages.append(
            {"role": "assistant", "parts": parts, "finish_reason": choice.get("finish_reason")}
        )
    span.add_event(DETAILS, {"gen_ai.output.messages": json.dumps(messages, ensure_ascii=False)})
