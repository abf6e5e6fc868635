"""Sans-IO translation between the domain and Ollama's native API: requests in
ollama_request.py, answers in ollama_response.py; both under one name for their callers."""

from mana_llm.providers.ollama_request import ModelDefaults, chat_body, embed_body, messages_json
from mana_llm.providers.ollama_response import (
    StreamTranslator,
    completion,
    embeddings,
    finish_reason,
    in_band_error,
    model_names,
    models,
    new_completion_id,
    openai_tool_call,
    unix_time,
    usage_from,
)

__all__ = [
    "ModelDefaults",
    "StreamTranslator",
    "chat_body",
    "completion",
    "embed_body",
    "embeddings",
    "finish_reason",
    "in_band_error",
    "messages_json",
    "model_names",
    "models",
    "new_completion_id",
    "openai_tool_call",
    "unix_time",
    "usage_from",
]
