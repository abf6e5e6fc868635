"""The request fields hostile-input tests vary: every chat field the gateway reads or passes
on, a message's fields, an embeddings request's fields."""

CHAT_FIELDS = [
    "model",
    "messages",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "tools",
    "tool_choice",
    "response_format",
    "reasoning_effort",
    "reasoning",
    "options",
    "keep_alive",
    "user",
    "metadata",
    "logprobs",
    "extra_field",
]
MESSAGE_FIELDS = ["role", "content", "name", "tool_calls", "tool_call_id", "reasoning_content"]
EMBEDDING_FIELDS = ["model", "input", "encoding_format", "dimensions", "truncate", "keep_alive"]
