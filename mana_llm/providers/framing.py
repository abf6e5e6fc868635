"""Sans-IO decoders for the two streaming framings: SSE (OpenAI) and NDJSON (Ollama).

Each takes bytes as they arrive, in any split, and returns the complete payloads seen so far.
"""

from __future__ import annotations


class SSEDecoder:
    """Server-sent events: returns the `data` of each event; comments and other fields dropped."""

    def __init__(self) -> None:
        self._tail = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        lines = (self._tail + chunk).split(b"\n")
        self._tail = lines.pop()
        events: list[bytes] = []
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if self._data:
                    events.append(b"\n".join(self._data))
                    self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
            # ":" comments (keep-alives such as ": OPENROUTER PROCESSING"), event:, id:, retry:
        return events

    def close(self) -> list[bytes]:
        """At end of input: an event the upstream did not terminate with a blank line."""
        events = self.feed(b"\n\n") if self._tail or self._data else []
        self._tail = b""
        return events


class NDJSONDecoder:
    """Newline-delimited JSON: returns each non-blank line."""

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        lines = (self._tail + chunk).split(b"\n")
        self._tail = lines.pop()
        return [line for line in lines if line.strip()]

    def close(self) -> list[bytes]:
        tail, self._tail = self._tail, b""
        return [tail] if tail.strip() else []
