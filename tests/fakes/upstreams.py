"""Fake Ollama and OpenAI-compatible upstreams speaking the real wire formats.

Ollama: /api/chat (NDJSON stream by default, one object with stream:false), /api/embed,
/api/tags; errors as {"error": "..."}. OpenAI: /v1/chat/completions (SSE with a role chunk,
content chunks, a finish chunk, the usage chunk when asked, [DONE]), /v1/embeddings (float or
base64), /v1/models; bearer-key check; errors in the OpenAI shape.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import attrs
import trio

from tests.fakes.server import Delay, Part, Reply, Request

CREATED_AT = "2026-11-26T10:00:00.123456789+00:00"
CREATED = 1795687200
WORDS = ("Hello", " from", " the", " fake", ".")


def vector(text: str, dims: int = 4) -> list[float]:
    return [float(len(text) + i) / 8 for i in range(dims)]  # exact in float32


# --- Ollama ------------------------------------------------------------------------------


def ollama_line(
    content: str = "",
    *,
    done: bool = False,
    thinking: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking:
        message["thinking"] = thinking
    if tool_calls:
        message["tool_calls"] = tool_calls
    line: dict[str, Any] = {
        "model": "gemma3:4b",
        "created_at": CREATED_AT,
        "message": message,
        "done": done,
    }
    if done:
        line.update(
            done_reason="stop", total_duration=5000, prompt_eval_count=7, eval_count=len(WORDS)
        )
    line.update(extra)
    return json.dumps(line).encode() + b"\n"


def ollama_stream(*parts: Part) -> Reply:
    return Reply(200, list(parts), {"content-type": "application/x-ndjson"}, chunked=True)


# A text-only model (no vision, tools or thinking), refused the way Ollama refuses it. Texts and
# statuses from Ollama's source: server/routes.go (ChatHandler: 400 `"<model>" does not support
# thinking`; handleScheduleError: 400 for errCapabilities, whose text CheckCapabilities builds
# in server/images.go as `<full name> does not support tools`) and model/model.go
# (ErrNoVisionModel, which streamResponse sends as a 500 before any content).
TEXT_ONLY = "gemma3:270m"


def capability_refusal(name: str, body: dict[str, Any]) -> Reply | None:
    if name != TEXT_ONLY:
        return None
    if body.get("tools"):
        error = f"registry.ollama.ai/library/{name} does not support tools"
        return Reply.json({"error": error}, 400)
    if body.get("think"):
        return Reply.json({"error": f'"{name}" does not support thinking'}, 400)
    if any(m.get("images") for m in body.get("messages", ())):
        error = "this model is missing data required for image input"
        return Reply.json({"error": error}, 500)
    return None


@attrs.define
class FakeOllama:
    """An Ollama server. What it has loaded follows Ollama's scheduler as its docs describe it:
    a chat or embed for a model not in memory loads it first (`load_s`, reported in the last
    line's `load_duration`, nanoseconds), evicting the least recently used model beyond
    `max_loaded` (OLLAMA_MAX_LOADED_MODELS); GET /api/ps lists what is loaded (PsResponse in
    Ollama's OpenAPI spec: name, model, size, size_vram, digest, details, expires_at)."""

    models: tuple[str, ...] = ("gemma3:4b", "nomic-embed-text:latest", TEXT_ONLY)
    max_loaded: int = 3
    load_s: float = 0.0
    loaded: list[str] = attrs.field(factory=list)  # least recently used first
    loads: int = 0  # cold loads so far
    parallel: int | None = None  # OLLAMA_NUM_PARALLEL: chats beyond it queue for a slot
    _slots: trio.CapacityLimiter | None = attrs.field(default=None, init=False)

    def _use(self, name: str) -> float:
        """Mark `name` used; the seconds it takes to load first (0 when it is loaded)."""
        name = name if ":" in name else f"{name}:latest"
        if name in self.loaded:
            self.loaded.remove(name)
            self.loaded.append(name)
            return 0.0
        self.loads += 1
        self.loaded.append(name)
        del self.loaded[: -self.max_loaded]
        return self.load_s

    def __call__(self, request: Request) -> Reply:
        if request.path == "/api/tags":
            return Reply.json({"models": [_tag(name) for name in self.models]})
        if request.path == "/api/ps":
            running = [
                {**_tag(name), "size_vram": 1, "expires_at": "2026-11-26T10:05:00Z"}
                for name in self.loaded
            ]
            for item in running:
                del item["modified_at"]
            return Reply.json({"models": running})
        if request.method != "POST":
            return Reply.json({"error": "method not allowed"}, 405)
        body = request.json()
        name = str(body.get("model"))
        if (
            name if ":" in name else f"{name}:latest"
        ) not in self.models and name not in self.models:
            return Reply.json({"error": f"model '{name}' not found"}, 404)
        if request.path == "/api/chat":
            refused = capability_refusal(name, body)
            if refused is not None:
                return refused
            load_s = self._use(name)
            reply = self._chat(body, load_s)
            if load_s:  # a cold load before the first token
                reply.parts.insert(0, Delay(load_s))
            if self.parallel is not None:
                self._slots = self._slots or trio.CapacityLimiter(self.parallel)
                reply.slots = self._slots
            return reply
        if request.path == "/api/embed":
            self._use(name)
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            # Ollama truncates to `dimensions` and never extends past the model's own size
            # (server/routes.go, EmbedHandler); the fake's model has 768
            dims = min(body.get("dimensions") or 4, 768)
            return Reply.json(
                {
                    "model": body["model"],
                    "embeddings": [vector(t, dims) for t in inputs],
                    "prompt_eval_count": 3,
                }
            )
        return Reply.json({"error": "not found"}, 404)

    def _chat(self, body: dict[str, Any], load_s: float = 0.0) -> Reply:
        """Text by default; a tool call when tools are offered and no tool result came back
        yet; thinking when asked to think; a `length` finish when num_predict is 2."""
        stream = body.get("stream", True)
        messages = body.get("messages", [])
        thinking = "Let me think." if body.get("think") else None
        limited = (body.get("options") or {}).get("num_predict") == 2
        if body.get("tools") and messages and messages[-1]["role"] != "tool":
            tool = body["tools"][0]["function"]["name"]
            call = {"function": {"name": tool, "arguments": {"city": "Paris", "days": 2}}}
            if stream:
                return ollama_stream(ollama_line("", tool_calls=[call]), ollama_line(done=True))
            return Reply.json(json.loads(ollama_line("", done=True, tool_calls=[call])))
        words = WORDS[:2] if limited else WORDS
        if messages and messages[-1]["role"] == "tool":
            words = ("It is sunny in ", "Paris.")
        reason: dict[str, Any] = {"done_reason": "length"} if limited else {}
        reason["load_duration"] = int(load_s * 1e9)  # nanoseconds, as Ollama reports it
        if stream:
            lines = [
                ollama_line(w, thinking=thinking) if i == 0 and thinking else ollama_line(w)
                for i, w in enumerate(words)
            ]
            return ollama_stream(*lines, ollama_line(done=True, **reason))
        final = json.loads(ollama_line("".join(words), done=True, **reason))
        if thinking:
            final["message"]["thinking"] = thinking
        return Reply.json(final)


def _tag(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": CREATED_AT,
        "size": 1,
        "digest": "0" * 64,
        "details": {"format": "gguf", "family": "gemma3"},
    }


# --- OpenAI-compatible -------------------------------------------------------------------


def sse(payload: Any) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


def openai_chunk(
    content: str | None = None, finish: str | None = None, *, role: bool = False
) -> bytes:
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    return sse(
        {
            "id": "chatcmpl-up",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": "upstream-model",
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
    )


def openai_usage_chunk() -> bytes:
    return sse(
        {
            "id": "chatcmpl-up",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": "upstream-model",
            "choices": [],
            "usage": {
                "prompt_tokens": 7,
                "completion_tokens": len(WORDS),
                "total_tokens": 7 + len(WORDS),
            },
        }
    )


def openai_completion(
    model: str, content: str | None, finish: str = "stop", **message: Any
) -> Reply:
    """A non-streaming `chat.completion` answer; `message` adds fields (tool_calls...)."""
    return Reply.json(
        {
            "id": "chatcmpl-up",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": content,
                        "refusal": None,
                        **message,
                    },
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": 7,
                "completion_tokens": len(WORDS),
                "total_tokens": 7 + len(WORDS),
            },
        }
    )


def openai_stream(*parts: Part) -> Reply:
    return Reply(200, list(parts), {"content-type": "text/event-stream"}, chunked=True)


def openai_error(status: int, message: str, code: str | None = None, **headers: str) -> Reply:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return Reply.json({"error": error}, status, headers)


def together_model(model: str) -> dict[str, Any]:
    """One entry of Together's model list, as its API reference documents `GET /models`
    (docs.together.ai/reference/models; its SDK types the answer `List[ModelInfo]`)."""
    return {
        "id": model,
        "object": "model",
        "created": CREATED,
        "type": "chat",
        "display_name": model.rsplit("/", 1)[-1],
        "organization": model.split("/", 1)[0],
        "link": "https://huggingface.co/" + model,
        "license": "other",
        "context_length": 131072,
        "pricing": {"hourly": 0, "input": 0.18, "output": 0.18, "base": 0, "finetune": 0},
    }


@attrs.define
class FakeOpenAI:
    key: str = "sk-upstream-secret"
    models: tuple[str, ...] = (
        "llama-3.1-8b-instant",
        "meta-llama/llama-3.1-8b-instruct",
        "embed-small",
    )
    # the model list's shape: OpenAI's {"object": "list", "data": [...]}; "together": a bare
    # array; "models": {"models": [...]} as some self-hosted servers answer
    list_shape: str = "openai"

    def __call__(self, request: Request) -> Reply:
        if request.headers.get("authorization") != f"Bearer {self.key}":
            return openai_error(
                401, f"Invalid API key provided: {request.headers.get('authorization')}"
            )
        if request.path == "/v1/models":
            if self.list_shape == "together":
                return Reply.json([together_model(m) for m in self.models])
            data = [
                {"id": m, "object": "model", "created": CREATED, "owned_by": "fake"}
                for m in self.models
            ]
            if self.list_shape == "models":
                return Reply.json({"models": data})
            return Reply.json({"object": "list", "data": data})
        body = request.json()
        if body.get("model") not in self.models:
            return openai_error(
                404, f"The model `{body.get('model')}` does not exist", "model_not_found"
            )
        if request.path == "/v1/chat/completions":
            return self._chat(body)
        if request.path == "/v1/embeddings":
            return self._embeddings(body)
        return openai_error(404, "no such route")

    def _chat(self, body: dict[str, Any], load_s: float = 0.0) -> Reply:
        if body.get("stream"):
            parts: list[Part] = [b": OPENROUTER PROCESSING\n\n", openai_chunk("", role=True)]
            parts += [openai_chunk(w) for w in WORDS]
            parts.append(openai_chunk(finish="stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                parts.append(openai_usage_chunk())
            parts.append(sse("[DONE]"))
            return openai_stream(*parts)
        return openai_completion(body["model"], "".join(WORDS))

    def _embeddings(self, body: dict[str, Any]) -> Reply:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        items = []
        for i, text in enumerate(inputs):
            vec = vector(str(text))
            value: Any = vec
            if body.get("encoding_format") == "base64":
                value = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
            items.append({"object": "embedding", "index": i, "embedding": value})
        usage = {"prompt_tokens": 3, "total_tokens": 3}
        return Reply.json({"object": "list", "data": items, "model": body["model"], "usage": usage})
