"""The HTTP surface: the request pipeline (request_scope.py) around the inference routes as
plain ASGI, in front of a Quart-Trio app for every other route; routes are thin, one module per
concern.

request_scope.py  the pipeline every exchange passes once: context, keys, CORS, status, metrics
guard.py     gateway keys and CORS
chat.py      POST /v1/chat/completions, /v1/responses, /v1/embeddings (plain ASGI, `plain.py`,
             before Quart); responses_request.py and responses_answer.py translate the
             Responses API to and from the chat path
models.py    GET /v1/models[/{model}]
status.py    /health, /livez, /readyz, /v1/health, /v1/aliases, /metrics
callers.py   the admission step (access/), /v1/usage, /v1/keys/status
failures.py  OpenAI-shaped errors for everything, the status on the trace
"""

from __future__ import annotations

from quart import Response
from quart_trio import QuartTrio

from mana_llm import errors
from mana_llm.access.gate import Gate
from mana_llm.api.callers import Access, register_callers
from mana_llm.api.chat import CHAT_PATH, EMBEDDINGS_PATH, RESPONSES_PATH, InferenceRoutes
from mana_llm.api.failures import register_failures
from mana_llm.api.guard import Guard
from mana_llm.api.models import register_models
from mana_llm.api.request_scope import ASGIApp, SpanStep, with_request_scope
from mana_llm.api.status import register_status
from mana_llm.gateway import Gateway
from mana_llm.lifecycle import Lifecycle
from mana_llm.metrics import Metrics
from mana_llm.settings import Settings


def create_app(
    gateway: Gateway,
    settings: Settings,
    metrics: Metrics,
    lifecycle: Lifecycle,
    gate: Gate | None = None,
    spans: SpanStep | None = None,
) -> ASGIApp:
    """The pipeline around the inference routes, Quart behind them for everything else;
    `gate`: the callers' admission (None: no keys file, no ledger); `spans`: the requests'
    server spans (None: traces off)."""
    guard = Guard.from_settings(settings)
    access = Access(gate) if gate is not None else None
    app = QuartTrio("mana_llm")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.config["RESPONSE_TIMEOUT"] = None  # our own deadlines bound every stream
    # POST on the inference routes never reaches Quart; their rules here keep Quart's answer
    # to any other method on them (405 with Allow, OPTIONS for a CORS preflight)
    for path in (CHAT_PATH, RESPONSES_PATH, EMBEDDINGS_PATH):
        app.add_url_rule(path, path, _answered_in_front, methods=["POST"])
    register_models(app, gateway, metrics)
    register_status(app, gateway, metrics, lifecycle)
    register_callers(app, access)
    register_failures(app, settings)
    routes = InferenceRoutes(gateway, settings, metrics, access).asgi(app)
    return with_request_scope(routes, metrics, guard, lifecycle, access, spans=spans)


async def _answered_in_front() -> Response:
    raise errors.InternalError("an inference route reached Quart")
