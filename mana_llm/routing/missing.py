"""Models a provider said it does not have, remembered for a while so an alias chain stops
paying a failed call for them on every request (and its cache lookups key on the entry that
really answers). Pure: every method takes `now`."""

from __future__ import annotations

import math

import attrs

from mana_llm import errors
from mana_llm.domain import Target

# How long a model-not-found answer is believed: an operator who pulls the model (or fixes
# the alias) sees it used again within this long.
MISSING_MODEL_S = 60.0


@attrs.define(eq=False)
class MissingModels:
    remember_s: float = MISSING_MODEL_S
    _until: dict[Target, float] = attrs.field(factory=dict)

    def note(self, target: Target, now: float) -> None:
        """`target`'s provider answered that it has no such model."""
        self._until[target] = now + self.remember_s
        if len(self._until) > 1024:  # bounded: drop what has expired
            self._until = {t: u for t, u in self._until.items() if u > now}

    def until(self, target: Target, now: float) -> float | None:
        """Until when `target` is believed missing; None when it is not."""
        until = self._until.get(target)
        if until is None or until <= now:
            return None
        return until

    def refusal(self, target: Target, now: float) -> errors.UpstreamModelNotFound | None:
        """A chain entry whose model its provider said it does not have, within the memory:
        skipped without contact, saying so."""
        until = self.until(target, now)
        if until is None:
            return None
        return errors.UpstreamModelNotFound(
            f"{target.resolved} answered that it has no such model; skipped for"
            f" {math.ceil(until - now):g}s more",
            provider=target.provider,
            contacted=False,
        )
