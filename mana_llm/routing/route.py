"""What a model string resolved to (a Route: an alias's chain with its policy, or one
`provider/model`), and a request as each provider needs it (Prepared)."""

from __future__ import annotations

import attrs

from mana_llm.domain import ChatRequest, Target
from mana_llm.providers.protocol import Provider
from mana_llm.routing.aliases import Alias


@attrs.frozen
class Route:
    """What a model string resolved to, against one snapshot of the alias table."""

    targets: tuple[Target, ...]
    alias: Alias | None = None
    # a direct model whose prefix names no provider (`anthropic/claude-3` went to Ollama): what
    # a model-not-found answer should add
    unknown_prefix: str | None = None

    @property
    def direct(self) -> bool:
        return self.alias is None

    @property
    def label(self) -> str:
        """The alias, or the one `provider/model` a direct request names."""
        return self.alias.name if self.alias is not None else self.targets[0].resolved

    def attempt_timeout_s(self, provider: Provider) -> float:
        if self.alias is not None and self.alias.attempt_timeout_s is not None:
            return self.alias.attempt_timeout_s
        return provider.timeout_s

    @property
    def hedge_after_s(self) -> float | None:
        return self.alias.hedge_after_s if self.alias is not None else None

    def retries(self, default: int) -> int:
        if self.alias is not None and self.alias.retries is not None:
            return self.alias.retries
        return default

    def first_token_timeout_s(self, provider: Provider, default_s: float) -> float:
        if self.alias is not None and self.alias.first_token_timeout_s is not None:
            default_s = self.alias.first_token_timeout_s
        return min(default_s, self.attempt_timeout_s(provider))


@attrs.define(eq=False)
class Prepared:
    """One request as each provider needs it, prepared once per provider whatever the number
    of attempts (Ollama fetches image URLs once per request, not once per chain entry)."""

    request: ChatRequest
    _by_provider: dict[str, ChatRequest] = attrs.field(factory=dict)

    async def for_provider(self, provider: Provider) -> ChatRequest:
        found = self._by_provider.get(provider.name)
        if found is None:
            found = self._by_provider[provider.name] = await provider.prepare(self.request)
        return found
