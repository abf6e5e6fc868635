"""Turning a caller's `model` string into the targets to try."""

from __future__ import annotations

from collections.abc import Collection

from mana_llm import errors
from mana_llm.domain import Target

ALIAS_PREFIX = "mana/"


def parse_target(model: str, providers: Collection[str], ollama_default_model: str) -> Target:
    """`provider/model` for a known provider prefix (the rest, slashes included, is the upstream
    model); anything else is an Ollama model (`gemma3:4b`, `hf.co/org/model`)."""
    prefix, sep, rest = model.partition("/")
    if sep and prefix in providers:
        if prefix == "ollama":
            return Target("ollama", rest or ollama_default_model)
        if not rest:
            raise errors.InvalidRequest(
                f"model {model!r} names no model after the provider", param="model"
            )
        return Target(prefix, rest)
    if model == "ollama":
        return Target("ollama", ollama_default_model)
    return Target("ollama", model)
