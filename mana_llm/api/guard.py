"""Who may call: gateway keys on /v1/* (each key's cache namespace computed once) and CORS.
The request pipeline (`request_scope.py`) applies both to every route, plain or Quart's."""

from __future__ import annotations

import hashlib
import hmac

import attrs

from mana_llm import errors
from mana_llm.settings import Settings

ALLOW_HEADERS = "Authorization, Content-Type, X-Request-Id, Cache-Control, X-Mana-LLM-Cache"
EXPOSED = (
    "X-Mana-LLM-Resolved, X-Mana-LLM-Attempts, X-Mana-LLM-Deployment, X-Mana-LLM-Cache,"
    " X-Request-Id"
)
PUBLIC = "public"  # the cache namespace when the gateway has no keys


@attrs.frozen
class Guard:
    keys: tuple[tuple[bytes, str], ...]  # each gateway key with its namespace (the key hashed)
    origins: frozenset[str]
    callers: bool = False  # KEYS_PATH is set: a key is required even with no gateway keys

    @classmethod
    def from_settings(cls, settings: Settings) -> Guard:
        keys = tuple(
            (key.encode(), hashlib.sha256(key.encode()).hexdigest()[:32])
            for key in settings.api_keys
        )
        return cls(keys, frozenset(settings.cors_origins), settings.keys_path is not None)

    @staticmethod
    def bearer(authorization: str) -> str | None:
        """The token of `Authorization: Bearer <token>`, or None."""
        scheme, _, token = authorization.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None

    def namespace(self, authorization: str) -> str:
        """The cache namespace of the gateway key in an `Authorization` header; Unauthorized
        when the gateway has keys (or a keys file) and this is none of them."""
        if not self.keys and not self.callers:
            return PUBLIC
        scheme, _, token = authorization.partition(" ")
        given = token.strip().encode("utf-8", "surrogateescape")
        namespace = next((ns for key, ns in self.keys if hmac.compare_digest(given, key)), None)
        if scheme.lower() != "bearer" or namespace is None:
            raise errors.Unauthorized("a valid API key is required: Authorization: Bearer <key>")
        return namespace

    def cors(self, origin: str) -> dict[str, str]:
        """The CORS headers an answer to `origin` carries (none for an origin not allowed)."""
        if not origin or not ("*" in self.origins or origin in self.origins):
            return {}
        return {
            "access-control-allow-origin": "*" if "*" in self.origins else origin,
            "vary": "Origin",
            "access-control-allow-headers": ALLOW_HEADERS,
            "access-control-allow-methods": "GET, POST, OPTIONS",
            "access-control-expose-headers": EXPOSED,
        }

    def cors_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        if not self.origins:
            return []
        return [(k.encode(), v.encode("latin-1")) for k, v in self.cors(origin).items()]
