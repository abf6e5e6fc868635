"""Entries: a streamed answer assembles into the completion a non-stream caller would get, a
completion replays as a proper stream, and only faithfully replayable answers are stored."""

from __future__ import annotations

from typing import Any

import pytest

from mana_llm.cache.entries import (
    Entry,
    completion_from_chunks,
    decode,
    replay_chunks,
    storable_completion,
)
from mana_llm.domain import Usage

USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **top: Any) -> Any:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "groq/llama",
        "choices": choices,
        **top,
    }


STREAM = [
    chunk({"role": "assistant", "content": ""}, system_fingerprint="fp_1"),
    chunk({"reasoning_content": "think "}),
    chunk({"reasoning_content": "hard"}),
    chunk({"content": "Hello"}),
    chunk({"content": ", world"}),
    chunk({}, "stop"),
    chunk(None, usage=USAGE),
]


def test_a_stream_assembles_into_its_completion() -> None:
    completion = completion_from_chunks(STREAM)
    assert completion == {
        "id": "chatcmpl-up",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "groq/llama",
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello, world",
                    "reasoning_content": "think hard",
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
    assert storable_completion(completion)


def test_a_completion_replays_as_the_stream_it_came_from() -> None:
    completion = completion_from_chunks(STREAM)
    assert completion is not None
    chunks = replay_chunks(completion, "chatcmpl-new", 1800000000)
    assert all(c.payload["id"] == "chatcmpl-new" for c in chunks)
    assert all(c.payload["created"] == 1800000000 for c in chunks)
    assert all(c.payload["model"] == "groq/llama" for c in chunks)
    assert all(c.payload["object"] == "chat.completion.chunk" for c in chunks)
    deltas = [c.payload["choices"][0]["delta"] for c in chunks if c.payload["choices"]]
    assert deltas == [
        {"role": "assistant", "reasoning_content": "think hard"},
        {"content": "Hello, world"},
        {},
    ]
    assert [c.commits for c in chunks] == [True, True, False, False]
    assert [c.finish_reason for c in chunks] == [None, None, "stop", None]
    assert chunks[-1].usage_only and chunks[-1].usage == Usage(7, 3)
    # and back again: the replay assembles into the same completion (id and created aside)
    again = completion_from_chunks([c.payload for c in chunks])
    assert again == {**completion, "id": "chatcmpl-new", "created": 1800000000}


def test_logprobs_are_assembled_and_replayed() -> None:
    lp1, lp2 = {"token": "Hi", "logprob": -0.1}, {"token": "!", "logprob": -0.2}
    stream = [
        chunk({"role": "assistant", "content": "Hi"}),
        chunk({"content": "!"}),
        chunk({}, "stop"),
    ]
    stream[0]["choices"][0]["logprobs"] = {"content": [lp1], "refusal": None}
    stream[1]["choices"][0]["logprobs"] = {"content": [lp2], "refusal": None}
    completion = completion_from_chunks(stream)
    assert completion is not None
    assert completion["choices"][0]["logprobs"] == {"content": [lp1, lp2]}
    replayed = replay_chunks(completion, "x", 1)
    assert replayed[0].payload["choices"][0]["logprobs"] == {"content": [lp1, lp2]}


@pytest.mark.parametrize(
    "stream",
    [
        [chunk({"role": "assistant", "content": "Hi"})],  # cut: no finish
        [chunk({"content": "Hi"}), chunk({}, "tool_calls")],
        [chunk({"content": "Hi"}), chunk({}, "content_filter")],
        [
            chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f"}}]}),
            chunk({}, "stop"),
        ],
        [chunk({"content": "Hi", "audio": {"id": "a"}}), chunk({}, "stop")],  # unknown field
        [
            {**chunk({"content": "a"}), "choices": [{"index": 1, "delta": {"content": "b"}}]},
            chunk({}, "stop"),
        ],  # a second choice
        [
            {**chunk(), "choices": [{"index": 0, "delta": {"content": "a"}, "logprobs": [1]}]},
            chunk({}, "stop"),
        ],
        [{**chunk(), "choices": [{"index": 0, "delta": "a"}]}, chunk({}, "stop")],
    ],
    ids=[
        "cut",
        "tool-calls-finish",
        "content-filter",
        "tool-call-delta",
        "audio",
        "n>1",
        "odd-logprobs",
        "odd-delta",
    ],
)
def test_what_cannot_be_replayed_faithfully_is_not_assembled(stream: list[Any]) -> None:
    assert completion_from_chunks(stream) is None


def test_storable_completions() -> None:
    def completion(message: dict[str, Any], finish: str = "stop", n: int = 1) -> dict[str, Any]:
        choice = {"index": 0, "message": message, "finish_reason": finish}
        return {"choices": [choice] * n}

    text = {"role": "assistant", "content": "hi"}
    assert storable_completion(completion(text))
    assert storable_completion(completion(text, "length"))
    assert not storable_completion(completion(text, "tool_calls"))
    assert not storable_completion(completion(text, n=2))
    calls = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    assert not storable_completion(completion({**text, "tool_calls": calls}))
    assert not storable_completion({"choices": []})


def test_entries_round_trip_and_garbage_decodes_to_nothing() -> None:
    entry = Entry("groq/llama", {"object": "list", "data": []})
    assert decode(entry.encode()) == entry
    for garbage in [b"", b"{", b"[]", b'{"v": 99, "resolved": "a/b", "payload": {}}', b'"x"']:
        assert decode(garbage) is None
    assert decode(b'{"v": 1, "resolved": "no-slash", "payload": {}}') is None
