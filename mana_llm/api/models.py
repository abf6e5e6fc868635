"""GET /v1/models and /v1/models/{provider}/{model}."""

from __future__ import annotations

from quart import Response, request
from quart_trio import QuartTrio

from mana_llm.api.render import json_response
from mana_llm.api.request_scope import context
from mana_llm.gateway import Gateway
from mana_llm.metrics import Metrics


def register_models(app: QuartTrio, gateway: Gateway, metrics: Metrics) -> None:
    @app.get("/v1/models")
    async def list_models() -> Response:
        context(request.scope).begin(metrics, "models")
        models = await gateway.list_models()
        return json_response({"object": "list", "data": [m.to_json() for m in models]})

    @app.get("/v1/models/<path:model_id>")
    async def get_model(model_id: str) -> Response:
        context(request.scope).begin(metrics, "models")
        return json_response((await gateway.get_model(model_id)).to_json())
