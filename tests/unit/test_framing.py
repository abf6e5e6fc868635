from __future__ import annotations

import pytest

from mana_llm.providers.framing import NDJSONDecoder, SSEDecoder

SSE = (
    b': OPENROUTER PROCESSING\n\ndata: {"a":1}\n\n'
    b'event: x\r\ndata: {"b":\r\ndata: 2}\r\n\r\ndata:[DONE]\n\n'
)


@pytest.mark.parametrize("cut", range(len(SSE) + 1))
def test_sse_events_survive_any_split(cut: int) -> None:
    decoder = SSEDecoder()
    events = decoder.feed(SSE[:cut]) + decoder.feed(SSE[cut:]) + decoder.close()
    assert events == [b'{"a":1}', b'{"b":\n2}', b"[DONE]"]


def test_sse_unterminated_last_event_is_flushed_at_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.close() == [b"[DONE]"]
    assert decoder.close() == []


NDJSON = b'{"a":1}\n\n{"b":2}\n{"c":3}'


@pytest.mark.parametrize("cut", range(len(NDJSON) + 1))
def test_ndjson_lines_survive_any_split(cut: int) -> None:
    decoder = NDJSONDecoder()
    lines = decoder.feed(NDJSON[:cut]) + decoder.feed(NDJSON[cut:]) + decoder.close()
    assert lines == [b'{"a":1}', b'{"b":2}', b'{"c":3}']
