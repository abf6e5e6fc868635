"""POST /v1/responses, request side: a Responses API body -> the chat completions body it
stands for, then the chat parser's `ChatRequest`. Everything below the api (routing, cache,
limits, metrics) sees the chat request it becomes.

The shapes are OpenAI's `CreateResponse` (openapi.yaml `components.schemas.CreateResponse`,
`InputItem`, `EasyInputMessage`, `FunctionToolCall`, `FunctionCallOutputItemParam`,
`FunctionTool`, `ToolChoiceFunction`, `TextResponseFormatConfiguration`) and openai-python's
`types/responses/response_create_params.py`. Stateless: no stored responses, so
`previous_response_id`, `conversation`, `prompt`, `item_reference` and `background` are 400s
that say what to send instead; `store` is accepted and answered as false. Every refusal is a
400 whose `param` is the Responses field (`input[2].content[0]`), never the chat field it
became.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from mana_llm import errors
from mana_llm.api import wire
from mana_llm.api.messages import bad
from mana_llm.api.responses_answer import echo
from mana_llm.domain import JSON, ChatRequest

# Fields the Responses API defines that translate to the chat body (or only to the answer).
_KNOWN = frozenset(
    {
        "model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls", "text",
        "reasoning", "max_output_tokens", "temperature", "top_p", "metadata", "user", "stream",
        "store", "previous_response_id", "background", "conversation", "prompt", "include",
        "truncation", "service_tier", "prompt_cache_key", "safety_identifier", "stream_options",
        "top_logprobs", "max_tool_calls", "prompt_cache_retention", "prompt_cache_options",
        "context_management", "moderation",
    }
)  # fmt: skip
# Passed to the chat body as they are: chat completions has the same field.
_SAME_IN_CHAT = ("temperature", "top_p", "user", "service_tier", "prompt_cache_key")
_NEEDS_STATE = {
    "previous_response_id": "the gateway keeps no responses: send the whole conversation in "
    "'input' (earlier outputs as items) instead of 'previous_response_id'",
    "conversation": "the gateway keeps no conversations: send the whole conversation in 'input'",
    "prompt": "the gateway keeps no prompt templates: send 'instructions' and 'input'",
}
_INPUT_ROLES = frozenset({"user", "assistant", "system", "developer"})


@attrs.frozen
class ResponsesAsk:
    """A Responses request: the chat request it became and what its answer echoes."""

    chat: ChatRequest
    echo: JSON  # the request fields a `response` object repeats (instructions, tools, ...)


def parse_responses_request(body: JSON) -> ResponsesAsk:
    unknown = sorted(key for key, value in body.items() if key not in _KNOWN and value is not None)
    if unknown:
        raise bad(f"unknown parameter {unknown[0]!r} for /v1/responses", unknown[0])
    for key, why in _NEEDS_STATE.items():
        if body.get(key) is not None:
            raise bad(why, key)
    if body.get("background") not in (None, False):
        raise bad("'background' responses are not supported: the gateway keeps none", "background")
    if body.get("store") is not None and not isinstance(body["store"], bool):
        raise bad("'store' must be a boolean", "store")
    messages, origins = _messages(body)
    chat: JSON = {"model": body.get("model"), "messages": messages}
    chat.update({key: body[key] for key in _SAME_IN_CHAT if body.get(key) is not None})
    tools = _tools(body.get("tools"))
    if tools:
        chat["tools"] = tools
        if body.get("parallel_tool_calls") is not None:
            chat["parallel_tool_calls"] = _flag(body, "parallel_tool_calls")
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    _text_format(body.get("text"), chat)
    _reasoning(body.get("reasoning"), chat)
    if body.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = _max_output_tokens(body["max_output_tokens"])
    if _flag(body, "stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # response.completed carries usage
    try:
        request = wire.parse_chat_request(chat)
    except errors.InvalidRequest as refused:
        raise _in_responses_terms(refused, origins) from None
    return ResponsesAsk(request, echo(body))


def _flag(body: JSON, key: str) -> bool:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise bad(f"'{key}' must be a boolean", key)
    return bool(value)


def _max_output_tokens(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise bad("'max_output_tokens' must be an integer >= 1", "max_output_tokens")
    return value


def _messages(body: JSON) -> tuple[list[JSON], list[str]]:
    """The chat messages and, for each, the Responses field it came from."""
    messages: list[JSON] = []
    origins: list[str] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise bad("'instructions' must be a string", "instructions")
        messages.append({"role": "system", "content": instructions})
        origins.append("instructions")
    given = body.get("input")
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
        origins.append("input")
    elif isinstance(given, list) and given:
        for i, item in enumerate(given):
            _item(item, f"input[{i}]", messages, origins)
    else:
        raise bad("'input' is required: a string or a non-empty list of items", "input")
    if not messages or all(m["role"] == "system" for m in messages):
        raise bad("'input' holds no message for the model to answer", "input")
    return messages, origins


def _item(item: Any, at: str, messages: list[JSON], origins: list[str]) -> None:
    if not isinstance(item, dict):
        raise bad(f"{at} must be an object", at)
    kind = item.get("type", "message")
    if kind == "message":
        messages.append(_message(item, at))
    elif kind == "function_call":
        call = _function_call(item, at)
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)  # parallel calls: one message
            return
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        messages.append(_function_output(item, at))
    elif kind == "reasoning":
        return  # an earlier answer's reasoning: chat providers take none back
    elif kind == "item_reference":
        raise bad(f"{at}: the gateway keeps no items to reference; send the item itself", at)
    else:
        name = kind if isinstance(kind, str) else repr(kind)
        raise bad(
            f"{at}.type {name!r} is not supported: input items are message, function_call, "
            "function_call_output and reasoning",
            f"{at}.type",
        )
    origins.append(at)


def _message(item: JSON, at: str) -> JSON:
    role = item.get("role")
    if not isinstance(role, str) or role not in _INPUT_ROLES:
        raise bad(f"{at}.role must be one of {', '.join(sorted(_INPUT_ROLES))}", f"{at}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list) or not content:
        raise bad(f"{at}.content must be a string or a non-empty list of parts", f"{at}.content")
    return {
        "role": role,
        "content": [_part(part, f"{at}.content[{j}]") for j, part in enumerate(content)],
    }


def _part(part: Any, at: str) -> JSON:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text"):
        if not isinstance(part.get("text"), str):
            raise bad(f"{at}.text must be a string", f"{at}.text")
        return {"type": "text", "text": part["text"]}
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image":
        url = part.get("image_url")
        if part.get("file_id") is not None or not isinstance(url, str) or not url:
            raise bad(f"{at}: input_image needs an image_url (a data: URI or an http(s) URL); "
                      "the gateway keeps no files", f"{at}.image_url")  # fmt: skip
        image: JSON = {"url": url}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if not isinstance(kind, str):
        raise bad(f"{at} must be an object with a string 'type'", at)
    raise bad(
        f"{at}.type {kind!r} is not supported: content parts are input_text, input_image "
        "(and output_text, refusal in assistant messages)",
        f"{at}.type",
    )


def _string(item: JSON, key: str, at: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise bad(f"{at}.{key} is required and must be a non-empty string", f"{at}.{key}")
    return value


def _function_call(item: JSON, at: str) -> JSON:
    arguments = item.get("arguments", "")
    if not isinstance(arguments, str):
        raise bad(f"{at}.arguments must be a JSON string", f"{at}.arguments")
    return {
        "id": _string(item, "call_id", at),
        "type": "function",
        "function": {"name": _string(item, "name", at), "arguments": arguments},
    }


def _function_output(item: JSON, at: str) -> JSON:
    output = item.get("output")
    if isinstance(output, list):  # a list of parts: the tool's text
        texts = [_part(part, f"{at}.output[{j}]") for j, part in enumerate(output)]
        if any(part["type"] != "text" for part in texts) or not texts:
            raise bad(f"{at}.output must be text: chat providers take no images from a tool",
                      f"{at}.output")  # fmt: skip
        output = "\n".join(part["text"] for part in texts)
    if not isinstance(output, str):
        raise bad(f"{at}.output must be a string or a list of input_text parts", f"{at}.output")
    return {"role": "tool", "tool_call_id": _string(item, "call_id", at), "content": output}


def _tools(given: Any) -> list[JSON]:
    if given is None:
        return []
    if not isinstance(given, list):
        raise bad("'tools' must be a list", "tools")
    tools: list[JSON] = []
    for i, tool in enumerate(given):
        at = f"tools[{i}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            name = kind if isinstance(kind, str) else "none"
            raise bad(f"{at}.type {name!r} is not supported: only function tools "
                      "reach chat providers", f"{at}.type")  # fmt: skip
        function: JSON = {"name": _string(tool, "name", at)}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        if "parameters" in function and not isinstance(function["parameters"], dict):
            raise bad(f"{at}.parameters must be a JSON schema object", f"{at}.parameters")
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(choice: Any) -> Any:
    if choice in ("none", "auto", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": _string(choice, "name", "tool_choice")}}
    raise bad("'tool_choice' must be none, auto, required or {type: function, name}", "tool_choice")


def _text_format(text: Any, chat: JSON) -> None:
    if text is None:
        return
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None and isinstance(text, dict):
        return
    if not isinstance(fmt, dict):
        raise bad("'text.format' must be an object with a type", "text.format")
    kind = fmt.get("type")
    if kind == "text":
        chat["response_format"] = {"type": "text"}
    elif kind == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise bad("'text.format.schema' must be a JSON schema object", "text.format.schema")
        spec: JSON = {"name": _string(fmt, "name", "text.format"), "schema": schema}
        for key in ("description", "strict"):
            if fmt.get(key) is not None:
                spec[key] = fmt[key]
        chat["response_format"] = {"type": "json_schema", "json_schema": spec}
    else:
        raise bad("'text.format.type' must be text, json_object or json_schema", "text.format")


def _reasoning(reasoning: Any, chat: JSON) -> None:
    if reasoning is None:
        return
    if not isinstance(reasoning, dict):
        raise bad("'reasoning' must be an object", "reasoning")
    if reasoning.get("effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]


_CHAT_PATH = re.compile(r"messages\[(\d+)\]")


def _in_responses_terms(
    refused: errors.InvalidRequest, origins: list[str]
) -> errors.InvalidRequest:
    """A refusal of the chat parser, naming the Responses field the message came from."""

    def origin(match: re.Match[str]) -> str:
        index = int(match.group(1))
        return origins[index] if index < len(origins) else match.group(0)

    param = refused.param
    renamed = {
        "max_completion_tokens": "max_output_tokens",
        "response_format": "text.format",
        "reasoning_effort": "reasoning.effort",
    }
    if param is not None:
        param = renamed.get(param, _CHAT_PATH.sub(origin, param))
    message = _CHAT_PATH.sub(origin, refused.message)
    for chat_name, ours in renamed.items():
        message = message.replace(f"'{chat_name}", f"'{ours}")
    return bad(message, param)
