"""A fast fake OpenAI-compatible upstream for benchmarks (stdlib asyncio, no framework).

POST /v1/chat/completions: JSON, or SSE when "stream": true; the reply has TOKENS tokens (or the
request's `max_tokens`) and a stream waits DELAY_MS between chunks.
Usage: python bench/fake_upstream.py PORT TOKENS DELAY_MS
"""

from __future__ import annotations

import asyncio
import json
import re
import sys

HEAD_JSON = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
MAX_TOKENS = re.compile(rb'"max_tokens": *(\d+)')
HEAD_SSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


def completion(tokens: int) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1,
            "model": "bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "tok " * tokens, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": 5 + tokens},
        }
    ).encode()


def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
    data = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "bench",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    event = b"data: " + json.dumps(data).encode() + b"\n\n"
    return b"%x\r\n%b\r\n" % (len(event), event)


async def serve(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tokens: int, delay_s: float
) -> None:
    body_json = completion(tokens)
    token_chunk = chunk({"content": "tok "})
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            if b'"stream":true' not in body.replace(b" ", b""):
                writer.write(HEAD_JSON % len(body_json) + body_json)
                continue
            asked = MAX_TOKENS.search(body)
            count = int(asked.group(1)) if asked else tokens
            writer.write(HEAD_SSE + chunk({"role": "assistant", "content": ""}))
            for _ in range(count):
                await asyncio.sleep(delay_s)
                writer.write(token_chunk)
            usage = {"prompt_tokens": 5, "completion_tokens": count, "total_tokens": 5 + count}
            event = (
                b"data: "
                + json.dumps(
                    {
                        "id": "chatcmpl-bench",
                        "object": "chat.completion.chunk",
                        "created": 1,
                        "model": "bench",
                        "choices": [],
                        "usage": usage,
                    }
                ).encode()
                + b"\n\n"
            )
            writer.write(chunk({}, "stop") + b"%x\r\n%b\r\n" % (len(event), event))
            done = b"data: [DONE]\n\n"
            writer.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(done), done))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int, tokens: int, delay_ms: float) -> None:
    server = await asyncio.start_server(
        lambda r, w: serve(r, w, tokens, delay_ms / 1000), "127.0.0.1", port, backlog=1024
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])))
