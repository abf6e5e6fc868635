"""The committed stream's recorder: keeps chunks for the cache only while they stay small."""

from __future__ import annotations

from mana_llm.domain import JSON, StreamChunk, Target
from mana_llm.routing.commit import Recorder
from tests.fakes.providers import chunk_payload

TARGET = Target("ollama", "m")


def chunks(text: str, count: int) -> list[StreamChunk]:
    return [StreamChunk(chunk_payload(TARGET, {"content": text}), commits=True)] * count


async def test_a_recorder_hands_over_a_small_complete_answer() -> None:
    seen: list[list[JSON]] = []

    async def keep(payloads: list[JSON]) -> None:
        seen.append(payloads)

    recorder = Recorder(10_000, keep)
    recorder.keep(chunks("hello", 3))
    await recorder.complete()
    assert len(seen) == 1 and len(seen[0]) == 3


async def test_a_recorder_lets_go_past_its_bound() -> None:
    seen: list[list[JSON]] = []

    async def keep(payloads: list[JSON]) -> None:
        seen.append(payloads)

    recorder = Recorder(2_000, keep)
    recorder.keep(chunks("x" * 100, 10))  # about 1.6 kB: still kept
    recorder.keep(chunks("x" * 100, 10))  # past 2 kB: dropped, and nothing more is kept
    recorder.keep(chunks("x", 1))
    await recorder.complete()
    assert seen == []
