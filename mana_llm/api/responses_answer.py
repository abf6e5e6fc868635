"""POST /v1/responses, answer side: a chat completion -> a `response` object; the output
items a stream builds too (`responses_stream.py` frames a stream's events).

Shapes: openapi.yaml `components.schemas.Response`, `OutputMessage`, `OutputTextContent`,
`FunctionToolCall`, `ReasoningItem`, `ResponseUsage`, `ResponseError`; openai-python's
`types/responses/response.py` and the types it names.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any

import attrs

from mana_llm.api.messages import bad
from mana_llm.domain import JSON


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def usage_object(usage: Any) -> JSON | None:
    """Chat `usage` -> Responses `usage` (cached and reasoning tokens where the upstream said)."""
    if not isinstance(usage, Mapping):
        return None
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    prompt_details = usage.get("prompt_tokens_details")
    completion_details = usage.get("completion_tokens_details")
    cached = prompt_details.get("cached_tokens") if isinstance(prompt_details, Mapping) else 0
    reasoning = (
        completion_details.get("reasoning_tokens") if isinstance(completion_details, Mapping) else 0
    )
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": _count(cached), "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": _count(reasoning)},
        "total_tokens": prompt + completion,
    }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


MAX_METADATA_KEYS = 16


def echo(body: JSON) -> JSON:
    """What a `response` repeats of its request (validated where only the answer reads it)."""
    metadata = body.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict)
        or len(metadata) > MAX_METADATA_KEYS
        or not all(isinstance(v, str) and len(v) <= 512 for v in metadata.values())
    ):
        raise bad(f"'metadata' must be an object of at most {MAX_METADATA_KEYS} strings "
                  "of at most 512 characters", "metadata")  # fmt: skip
    return {
        "instructions": body.get("instructions"),
        "metadata": metadata or {},
        "tools": [_echo_tool(tool) for tool in body.get("tools") or ()],
        "tool_choice": body.get("tool_choice") or "auto",
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "max_output_tokens": body.get("max_output_tokens"),
        "text": body.get("text") or {"format": {"type": "text"}},
        "reasoning": body.get("reasoning"),
        "user": body.get("user"),
    }


def _echo_tool(tool: JSON) -> JSON:
    """A function tool as a `response` repeats it: every field the spec requires, null where
    the request left it out (`strict` is not assumed: chat providers apply no default)."""
    echo = {"type": "function", "name": tool["name"], "parameters": None, "strict": None}
    return echo | {k: v for k, v in tool.items() if k in ("description", "parameters", "strict")}


INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


@attrs.frozen
class Answer:
    """What a `response` object holds besides its output: the request's echo and the id."""

    id: str
    echo: JSON
    created_at: int

    def response(
        self,
        model: str,
        status: str,
        output: list[JSON],
        usage: JSON | None = None,
        finish_reason: str | None = None,
        error: JSON | None = None,
    ) -> JSON:
        echo = self.echo
        incomplete = INCOMPLETE.get(finish_reason or "")
        if status == "completed" and incomplete is not None:
            status = "incomplete"
        response: JSON = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "completed_at": int(time.time()) if status == "completed" else None,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": {"reason": incomplete} if status == "incomplete" else None,
            "instructions": echo["instructions"],
            "max_output_tokens": echo["max_output_tokens"],
            "metadata": echo["metadata"],
            "model": model,
            "output": output,
            "parallel_tool_calls": echo["parallel_tool_calls"],
            "previous_response_id": None,
            "reasoning": echo["reasoning"] or {"effort": None, "summary": None},
            "store": False,
            "temperature": echo["temperature"],
            "text": echo["text"],
            "tool_choice": echo["tool_choice"],
            "tools": echo["tools"],
            "top_p": echo["top_p"],
            "truncation": "disabled",
        }
        if usage is not None:  # an object in the spec, never null: absent until known
            response["usage"] = usage
        if echo["user"] is not None:  # a string in the spec, never null
            response["user"] = echo["user"]
        return response


# --- output items -----------------------------------------------------------------------


@attrs.define(eq=False)
class OutputMessage:
    index: int
    id: str = attrs.field(factory=lambda: new_id("msg"))
    parts: list[list[str]] = attrs.Factory(list)  # [kind, text]: output_text | refusal

    def item(self, status: str) -> JSON:
        return {
            "id": self.id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [content_part(kind, text) for kind, text in self.parts],
        }


def content_part(kind: str, text: str) -> JSON:
    if kind == "refusal":
        return {"type": "refusal", "refusal": text}
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


@attrs.define(eq=False)
class ReasoningItem:
    index: int
    id: str = attrs.field(factory=lambda: new_id("rs"))
    text: str = ""

    def item(self, status: str) -> JSON:
        summary = [{"type": "summary_text", "text": self.text}] if status != "in_progress" else []
        return {"id": self.id, "type": "reasoning", "summary": summary}


@attrs.define(eq=False)
class FunctionCallItem:
    index: int
    call_id: str
    name: str
    id: str = attrs.field(factory=lambda: new_id("fc"))
    arguments: str = ""

    def item(self, status: str) -> JSON:
        return {
            "id": self.id,
            "type": "function_call",
            "status": status,
            "call_id": self.call_id,
            "name": self.name,
            "arguments": self.arguments,
        }


OutputItem = OutputMessage | ReasoningItem | FunctionCallItem


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def reasoning_text(message: Mapping[str, Any]) -> str | None:
    text = message.get("reasoning_content") or message.get("reasoning")
    return text if isinstance(text, str) and text else None


def from_completion(answer: Answer, payload: JSON) -> JSON:
    """A complete `chat.completion` as a `response` object."""
    choices = payload.get("choices")
    choice = mapping(choices[0] if isinstance(choices, list) and choices else None)
    message = mapping(choice.get("message"))
    items: list[OutputItem] = []
    thought = reasoning_text(message)
    if thought:
        items.append(ReasoningItem(len(items), text=thought))
    content, refusal = message.get("content"), message.get("refusal")
    calls = message.get("tool_calls")
    calls = calls if isinstance(calls, list) else []
    if content or refusal or not calls:
        text = OutputMessage(len(items))
        if isinstance(refusal, str) and refusal:
            text.parts.append(["refusal", refusal])
        if (isinstance(content, str) and content) or not text.parts:
            text.parts.append(["output_text", content if isinstance(content, str) else ""])
        items.append(text)
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            items.append(
                FunctionCallItem(
                    len(items),
                    str(call.get("id") or new_id("call")),
                    str(function.get("name") or ""),
                    arguments=str(function.get("arguments") or ""),
                )
            )
    finish = choice.get("finish_reason")
    status = "incomplete" if finish in INCOMPLETE else "completed"
    return answer.response(
        str(payload.get("model") or ""),
        "completed",
        [item.item(status) for item in items],
        usage_object(payload.get("usage")),
        finish if isinstance(finish, str) else None,
    )
