"""The nulls an OpenAI-compatible upstream may send and the spec forbids are dropped; the ones
the spec allows are kept (`openai_compat.drop_disallowed_nulls`, run on every chunk)."""

from __future__ import annotations

from typing import Any

import pytest

from mana_llm.providers.openai_compat import drop_disallowed_nulls


def chunk(choice: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "choices": [choice], **top}


@pytest.mark.parametrize(
    ("choice", "kept"),
    [
        # the common chunk: only the nulls the spec allows
        ({"index": 0, "delta": {"content": "a"}, "finish_reason": None}, None),
        ({"index": 0, "delta": {}, "logprobs": None, "finish_reason": None}, None),
        # OpenRouter's own null beside the allowed ones
        (
            {"index": 0, "delta": {}, "logprobs": None, "finish_reason": None, "native": None},
            {"index": 0, "delta": {}, "logprobs": None, "finish_reason": None},
        ),
        # as many nulls as allowed names, but not the allowed ones
        (
            {"index": 0, "delta": {}, "logprobs": [], "finish_reason": None, "native": None},
            {"index": 0, "delta": {}, "logprobs": [], "finish_reason": None},
        ),
        (
            {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop", "x": None},
            {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"},
        ),
        # in the delta: content may be null, a tool_calls null may not
        (
            {"index": 0, "delta": {"content": None, "tool_calls": None}, "finish_reason": None},
            {"index": 0, "delta": {"content": None}, "finish_reason": None},
        ),
    ],
)
def test_a_chunk_choice_keeps_only_allowed_nulls(
    choice: dict[str, Any], kept: dict[str, Any] | None
) -> None:
    data = chunk(dict(choice, delta=dict(choice["delta"])))
    drop_disallowed_nulls(data, "delta")
    assert data["choices"] == [choice if kept is None else kept]


def test_top_level_and_usage_nulls() -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "details": None}
    data = chunk(
        {"index": 0, "delta": {}, "finish_reason": "stop"},
        system_fingerprint=None,
        service_tier=None,
        usage=usage,
    )
    drop_disallowed_nulls(data, "delta")
    assert "system_fingerprint" not in data and data["service_tier"] is None
    assert data["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_a_completion_message_keeps_only_allowed_nulls() -> None:
    message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": None}
    data = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    drop_disallowed_nulls(data, "message")
    assert data["choices"][0]["message"] == {"role": "assistant", "content": None, "refusal": None}
