"""What operators and orchestrators read: /health, /livez, /readyz, /v1/health, /v1/aliases,
/metrics. The bodies are built here, from the state the gateway reports."""

from __future__ import annotations

from typing import Any

from prometheus_client.exposition import choose_encoder
from quart import Response, request
from quart_trio import QuartTrio

from mana_llm.api.render import json_response
from mana_llm.domain import DeploymentStatus, ProviderStatus
from mana_llm.gateway import Gateway
from mana_llm.lifecycle import Lifecycle
from mana_llm.metrics import Metrics


def health_body(statuses: list[ProviderStatus]) -> tuple[dict[str, Any], int]:
    """ok: every configured provider healthy; down (503): every one unhealthy or failing;
    degraded otherwise (some unhealthy or failing, or not checked yet)."""
    providers = {s.name: s.summary for s in statuses}
    states = [s for s in providers.values() if s != "unconfigured"]
    status = "ok" if all(s == "healthy" for s in states) else "degraded"
    if states and all(s in ("unhealthy", "failing") for s in states):
        status = "down"
    return {"status": status, "providers": providers}, 503 if status == "down" else 200


def details(status: ProviderStatus) -> dict[str, object]:
    if status.state == "unconfigured":
        return {"state": "unconfigured", "missing": status.missing}
    return {
        "state": status.state,
        "consecutive_failures": status.consecutive_failures,
        "last_error": status.last_error,
        "last_failure_at": status.last_failure_at,
        "last_success_at": status.last_success_at,
        "opened_at": status.opened_at,
        "opened_because": status.opened_because,
        "reopens_at": status.reopens_at,
        "last_probe_at": status.last_probe_at,
        "last_probe_ok": status.last_probe_ok,
        "failing": status.failing,
        "deployments": [deployment(d) for d in status.deployments],
    }


def deployment(status: DeploymentStatus) -> dict[str, object]:
    """One deployment: its name, base URL (no credentials), circuit and what it holds."""
    health = status.health
    out: dict[str, object] = {
        "name": health.name,
        "base_url": status.base_url,
        "state": health.state,
        "in_flight": status.in_flight,
        "consecutive_failures": health.consecutive_failures,
        "last_error": health.last_error,
        "reopens_at": health.reopens_at,
        "last_probe_ok": health.last_probe_ok,
    }
    if status.installed is not None:  # a local model server
        out["models_installed"] = list(status.installed)
        out["models_loaded"] = list(status.loaded or ())
        out["models_probed_at"] = status.inventory_at
    return out


def register_status(
    app: QuartTrio, gateway: Gateway, metrics: Metrics, lifecycle: Lifecycle
) -> None:
    @app.get("/health")
    async def health() -> Response:
        body, status = health_body(gateway.provider_statuses())
        return json_response(body, status)

    @app.get("/livez")
    async def livez() -> Response:
        return json_response({"status": "alive"})

    @app.get("/readyz")
    async def readyz() -> Response:
        if lifecycle.ready:
            return json_response({"status": "ready"})
        return json_response({"status": "draining" if lifecycle.draining else "starting"}, 503)

    @app.get("/v1/health")
    async def health_details() -> Response:
        providers = {s.name: details(s) for s in gateway.provider_statuses()}
        return json_response({"providers": providers, "cache": gateway.cache_status()})

    @app.get("/v1/aliases")
    async def aliases() -> Response:
        table = gateway.aliases.table
        return json_response(
            {
                "object": "list",
                "data": [alias.to_json() for alias in table.aliases.values()],
                "loaded_at": table.loaded_at,
                "hash": table.content_hash,
                "source": table.source,
                "last_reload_error": gateway.aliases.last_error,
            }
        )

    @app.get("/metrics")
    async def metrics_page() -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(metrics.exposition()), content_type=content_type)
