"""Who may call: gateway keys on /v1/* (each key's cache namespace computed once) and CORS."""

from __future__ import annotations

import hashlib
import hmac

from quart import Response, g, request
from quart_trio import QuartTrio

from mana_llm import errors
from mana_llm.settings import Settings

ALLOW_HEADERS = "Authorization, Content-Type, X-Request-Id, Cache-Control, X-Mana-LLM-Cache"
EXPOSED = "X-Mana-LLM-Resolved, X-Mana-LLM-Attempts, X-Mana-LLM-Cache, X-Request-Id"


def register_guard(app: QuartTrio, settings: Settings) -> None:
    # each gateway key with its cache namespace (the key hashed), computed once
    api_keys = tuple(
        (key.encode(), hashlib.sha256(key.encode()).hexdigest()[:32]) for key in settings.api_keys
    )
    origins = frozenset(settings.cors_origins)

    @app.before_request
    async def authenticate() -> None:
        if not api_keys or request.method == "OPTIONS" or not request.path.startswith("/v1/"):
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip().encode()
        namespace = next((ns for key, ns in api_keys if hmac.compare_digest(given, key)), None)
        if scheme.lower() != "bearer" or namespace is None:
            raise errors.Unauthorized("a valid API key is required: Authorization: Bearer <key>")
        g.cache_namespace = namespace

    if not origins:
        return

    @app.after_request
    async def cors(response: Response) -> Response:
        origin = request.headers.get("origin")
        if origin and ("*" in origins or origin in origins):
            response.headers["access-control-allow-origin"] = "*" if "*" in origins else origin
            response.headers["vary"] = "Origin"
            response.headers["access-control-allow-headers"] = ALLOW_HEADERS
            response.headers["access-control-allow-methods"] = "GET, POST, OPTIONS"
            response.headers["access-control-expose-headers"] = EXPOSED
        return response
