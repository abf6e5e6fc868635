"""The request fields hostile-input tests vary: every chat field the gateway reads or passes
on, a message's fields, an embeddings request's fields, a Responses request's fields and an
input item's."""

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
RESPONSES_FIELDS = [
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "reasoning",
    "max_output_tokens",
    "temperature",
    "top_p",
    "metadata",
    "user",
    "stream",
    "store",
    "previous_response_id",
    "background",
    "include",
    "extra_field",
]
ITEM_FIELDS = ["type", "role", "content", "call_id", "name", "arguments", "output", "id"]
