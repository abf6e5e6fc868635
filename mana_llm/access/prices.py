"""What a model costs: `prices:` in the PROVIDERS_PATH file, per `provider/model`, in US dollars
per million tokens. Ollama is free unless priced; an unpriced cloud model costs 0 here, which is
why a `usd` budget that can reach one is a start-up warning."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import yaml

from mana_llm.access.keys import Caller


class PricesError(Exception):
    pass


@attrs.frozen
class Price:
    input_per_mtok: float
    output_per_mtok: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
        ) / 1e6


FREE = Price(0.0, 0.0)
MAX_RATES = 4096


@attrs.frozen
class Prices:
    table: Mapping[str, Price] = attrs.field(factory=dict)
    # each model's rates per million tokens, (input, output), known after its first request: a
    # request's reservation and charge are one lookup each (an unpriced model: 0, 0)
    _rates: dict[str, tuple[float, float]] = attrs.field(init=False, eq=False, factory=dict)

    def of(self, resolved: str) -> Price | None:
        """Its price; Ollama's models are free unless priced; None: an unpriced cloud model."""
        found = self.table.get(resolved)
        if found is not None:
            return found
        provider, sep, _ = resolved.partition("/")
        return FREE if (provider == "ollama" or not sep) else None

    def _rate(self, resolved: str) -> tuple[float, float]:
        rate = self._rates.get(resolved)
        if rate is None:
            price = self.of(resolved) or FREE
            rate = (price.input_per_mtok, price.output_per_mtok)
            if len(self._rates) < MAX_RATES:  # models are what routes name: few
                self._rates[resolved] = rate
        return rate

    def cost(self, resolved: str | None, prompt_tokens: int, completion_tokens: int) -> float:
        if not resolved:
            return 0.0
        rate = self._rates.get(resolved) or self._rate(resolved)
        return (prompt_tokens * rate[0] + completion_tokens * rate[1]) / 1e6

    def dearest(self, reachable: Iterable[str], prompt_tokens: int, completion: int) -> float:
        """What a request may cost at most, over the models it may reach."""
        most = 0.0
        for model in reachable:
            rate = self._rates.get(model) or self._rate(model)
            most = max(most, prompt_tokens * rate[0] + completion * rate[1])
        return most / 1e6

    def unpriced(self, caller: Caller, models: Iterable[str]) -> list[str]:
        """The models a `usd`-budgeted caller may reach that have no price."""
        budget = caller.limits.budget
        if budget is None or budget.usd is None:
            return []
        return sorted({m for m in models if self.of(m) is None})


def parse_prices(data: Any, where: str) -> Prices:
    """The `prices:` section of the providers file."""
    if data is None:
        return Prices()
    if not isinstance(data, dict):
        raise PricesError(f"{where}: prices must map provider/model to its price")
    table: dict[str, Price] = {}
    for model, spec in data.items():
        if not isinstance(model, str) or not isinstance(spec, dict):
            raise PricesError(f"{where}: the price of {str(model)[:80]!r} must be a mapping")
        if set(spec) - {"input_per_mtok", "output_per_mtok"}:
            raise PricesError(
                f"{where}: the price of {model[:80]!r} takes input_per_mtok and output_per_mtok"
            )
        values = [spec.get("input_per_mtok", 0), spec.get("output_per_mtok", 0)]
        if not all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1e6 for v in values
        ):
            raise PricesError(f"{where}: the price of {model[:80]!r} must be numbers >= 0")
        table[model] = Price(float(values[0]), float(values[1]))
    return Prices(table)


def read_prices(path: str | None) -> Prices:
    if path is None:
        return Prices()
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PricesError(f"PROVIDERS_PATH={path!r}: {exc}") from None
    return parse_prices(data.get("prices") if isinstance(data, dict) else None, path)


def reachable(caller: Caller, aliases: Mapping[str, Iterable[str]]) -> set[str]:
    """The `provider/model`s a caller may reach: the targets of the aliases it may call, and
    the models its allow-list names outright (without a glob)."""
    found = {m for m in caller.models if not any(c in m for c in "*?[")}
    for alias, targets in aliases.items():
        if caller.allows(alias):
            found.update(targets)
    return {m for m in found if not m.startswith("mana/")}
