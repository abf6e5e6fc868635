from __future__ import annotations

import pytest

from mana_llm.providers.framing import FrameTooLong, NDJSONDecoder, SSEDecoder

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


@pytest.mark.parametrize("decoder", [SSEDecoder(max_line_bytes=1000), NDJSONDecoder(1000)])
def test_a_line_without_end_is_bounded(decoder: SSEDecoder | NDJSONDecoder) -> None:
    prefix = b"data: " if isinstance(decoder, SSEDecoder) else b""
    assert decoder.feed(prefix + b"x" * 900) == []
    with pytest.raises(FrameTooLong):
        decoder.feed(b"x" * 200)


def test_an_sse_event_of_many_data_lines_is_bounded() -> None:
    decoder = SSEDecoder(max_line_bytes=1000)
    with pytest.raises(FrameTooLong):
        decoder.feed(b"data: " + b"x" * 600 + b"\ndata: " + b"y" * 600 + b"\n")


def test_a_long_line_fed_a_byte_at_a_time_is_linear() -> None:
    decoder = NDJSONDecoder()
    line = b'{"content": "' + b"x" * 200_000 + b'"}\n'
    out: list[bytes] = []
    for i in range(len(line)):  # quadratic re-concatenation would take minutes here
        out += decoder.feed(line[i : i + 1])
    assert out == [line[:-1]]


@pytest.mark.parametrize(
    ("read", "events"),
    [
        (b'data: {"a":1}\n\n', [b'{"a":1}']),  # the common read: one whole event
        (b'data: {"a":1}\n\ndata: {"b":2}\n\n', [b'{"a":1}', b'{"b":2}']),
        (b'data: {"a":1}\r\n\n', [b'{"a":1}']),
        (b'data: {"a":\ndata: 1}\n\n', [b'{"a":\n1}']),
    ],
)
def test_a_whole_read_is_split_into_its_events(read: bytes, events: list[bytes]) -> None:
    decoder = SSEDecoder()
    assert decoder.feed(read) == events
    assert decoder.close() == []
