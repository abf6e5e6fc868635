"""Deployments and the choice among them (docs/ARCHITECTURE.md section 6, "Selection").

A provider is served from one or more deployments: an Ollama GPU box each, or one key each at
a cloud. Each has its own client (`provider`: providers/ learn nothing of balancing), its own
breaker (provider health keyed by the deployment's name) and its own probes. The walk asks
`Balancer.choose` for one deployment per try of provider P for model M:

1. Candidates: P's deployments whose breaker is not open, not already tried by this entry,
   and that can serve M: for Ollama, M is in that host's installed models (its /api/tags, kept
   by the probe loop; unknown until the first probe: then any host may). A model is never sent
   to a host without it while another host lists it; when no host lists it, the lists may be
   stale (pulled since the last probe), so any host may be asked and its 404 says.
2. Ollama affinity: hosts where M is loaded now (/api/ps at each probe, and the gateway's own
   traffic: a host sent a model it had not loaded is loading it, perhaps evicting the others,
   which are forgotten until the next probe says; a success on H for M means M is loaded on
   H). Among hosts with M loaded, one whose in-flight count reached its max_in_flight
   is passed over for another with M loaded. When every loaded host is full, a host that must
   load M is taken only if the expected wait on the best loaded host (the requests queued ahead
   of this one, times that host's mean answer time, over its parallel slots) is worse than a
   cold load (`cold_load_s`); otherwise the request queues on the loaded host. When no host has
   it loaded, a host holding nothing is preferred to one whose model it would evict.
3. Among the remaining candidates: the least in flight relative to weight, ties broken at
   random. In-flight counts are per worker process: with WORKERS > 1 each worker sees its own
   share of the connections (the kernel spreads them evenly), so each balances its share and
   the sum stays balanced; a max_in_flight is then a per-worker bound (see README).

`round_robin` replaces 2 and 3 by plain rotation: the comparison `bench/balance.py` makes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import attrs

from mana_llm.domain import Inventory
from mana_llm.health.providers import CircuitState, ProviderHealthCache
from mana_llm.providers.protocol import Provider

MEAN_ALPHA = 0.2  # how fast a host's mean answer time follows new answers


def canonical(model: str) -> str:
    """An Ollama model name as /api/tags lists it: `gemma3` is `gemma3:latest`."""
    return model if ":" in model.rsplit("/", 1)[-1] else f"{model}:latest"


@attrs.define(eq=False)
class Deployment:
    name: str  # the health key, the metrics label, X-Mana-LLM-Deployment
    provider: Provider  # this deployment's own client
    weight: float = 1.0
    max_in_flight: int | None = None
    base_url: str = ""  # for operators, without credentials
    in_flight: int = 0
    installed: frozenset[str] | None = None  # None: not known (not probed yet, or a cloud)
    loaded: frozenset[str] = frozenset()
    inventory_at: float | None = None  # when a probe last read them
    mean_s: float | None = None  # its answers' mean duration, once one came

    def serves(self, model: str) -> bool:
        return self.installed is None or canonical(model) in self.installed

    def has_loaded(self, model: str) -> bool:
        return canonical(model) in self.loaded

    @property
    def full(self) -> bool:
        return self.max_in_flight is not None and self.in_flight >= self.max_in_flight

    def expected_wait_s(self) -> float:
        """How long a request sent now waits for a slot: the queue ahead, at this host's
        mean answer time, over its parallel slots (0 while a slot is free)."""
        if not self.full or self.max_in_flight is None:
            return 0.0
        ahead = self.in_flight - self.max_in_flight + 1
        return ahead * (self.mean_s or 0.0) / self.max_in_flight


@attrs.define(eq=False)
class Deployments:
    """One provider's deployments."""

    provider: str
    deployments: list[Deployment]
    cold_load_s: float = 10.0
    local: bool = False  # a model server that loads models (Ollama): affinity applies
    _turn: int = 0  # round-robin's position

    def named(self, name: str) -> Deployment | None:
        return next((d for d in self.deployments if d.name == name), None)


@attrs.define(eq=False)
class Balancer:
    groups: dict[str, Deployments]
    health: ProviderHealthCache
    rng: random.Random = attrs.field(factory=random.Random)
    round_robin: bool = False
    on_in_flight: Callable[[str, int], None] = lambda deployment, count: None  # metrics

    def deployments(self, provider: str) -> Sequence[Deployment]:
        group = self.groups.get(provider)
        return () if group is None else group.deployments

    def describe(self, deployment: str) -> str:
        """A deployment as log lines name it: its provider, and itself when there are several."""
        provider = self.provider_of(deployment)
        if provider is None or len(self.deployments(provider)) == 1:
            return provider or deployment
        return f"{provider} ({deployment})"

    def provider_of(self, deployment: str) -> str | None:
        return next(
            (g.provider for g in self.groups.values() if g.named(deployment) is not None), None
        )

    def candidates(
        self, provider: str, model: str, now: float, exclude: frozenset[str] = frozenset()
    ) -> list[Deployment]:
        """Rule 1: can serve the model, not open, not tried. When no deployment lists the
        model at all, its lists may be stale (pulled since the last probe): any may be asked,
        and Ollama's own 404 (remembered, routing/missing.py) says if it is really missing."""
        deployments = self.deployments(provider)
        listed = [d for d in deployments if d.serves(model)] or list(deployments)
        return [
            d
            for d in listed
            if d.name not in exclude and self.health.state(d.name, now) is not CircuitState.OPEN
        ]

    def choose(
        self, provider: str, model: str, now: float, exclude: frozenset[str] = frozenset()
    ) -> Deployment | None:
        """The deployment to try now, its breaker's trial taken if it is half-open; None when
        no candidate admits a call."""
        group = self.groups[provider]
        candidates = self.candidates(provider, model, now, exclude)
        while candidates:
            chosen = self._pick(group, candidates, model)
            if self.health.try_acquire(chosen.name, now):
                if group.local and not chosen.has_loaded(model):
                    chosen.loaded = frozenset({canonical(model)})  # it loads it now (below)
                return chosen
            candidates.remove(chosen)  # half-open, its one trial under way
        return None

    def _pick(self, group: Deployments, candidates: list[Deployment], model: str) -> Deployment:
        if self.round_robin:
            group._turn += 1
            return candidates[group._turn % len(candidates)]
        if group.local:
            loaded = [d for d in candidates if d.has_loaded(model)]
            free = [d for d in loaded if not d.full]
            if free:
                return self._least_busy(free)
            if loaded:  # every host with the model loaded is full: queue there, or load it?
                best = min(loaded, key=Deployment.expected_wait_s)
                cold = [d for d in candidates if not d.has_loaded(model) and not d.full]
                if cold and best.expected_wait_s() > group.cold_load_s:
                    return self._least_busy(cold)
                return best
            empty = [d for d in candidates if not d.loaded and not d.full]
            if empty:  # nobody has it loaded: load it where it evicts nothing
                return self._least_busy(empty)
        return self._least_busy(candidates)

    def _least_busy(self, candidates: list[Deployment]) -> Deployment:
        load = min(d.in_flight / d.weight for d in candidates)
        return self.rng.choice([d for d in candidates if d.in_flight / d.weight == load])

    @contextmanager
    def running(self, deployment: Deployment) -> Iterator[None]:
        """One call in flight on `deployment` (counted whether it ends well or not)."""
        self.start(deployment)
        try:
            yield
        finally:
            self.finish(deployment)

    def start(self, deployment: Deployment) -> None:
        deployment.in_flight += 1
        self.on_in_flight(deployment.name, deployment.in_flight)

    def finish(self, deployment: Deployment) -> None:
        deployment.in_flight -= 1
        self.on_in_flight(deployment.name, deployment.in_flight)

    def answered(self, deployment: Deployment, model: str, took_s: float) -> None:
        """A success on `deployment` for `model`: it is loaded there now (perhaps in place of
        the others, forgotten until the next probe), and its mean answer time moves."""
        name = canonical(model)
        if name not in deployment.loaded:
            deployment.loaded = frozenset({name})
        previous = deployment.mean_s
        deployment.mean_s = (
            took_s if previous is None else (previous + MEAN_ALPHA * (took_s - previous))
        )

    def probed(self, deployment: str, inventory: Inventory | None, now: float) -> None:
        """What a probe of `deployment` read: installed and loaded models (a local server)."""
        for group in self.groups.values():
            found = group.named(deployment)
            if found is None or inventory is None:
                continue
            if inventory.installed is not None:
                found.installed = inventory.installed
            if inventory.loaded is not None:
                found.loaded = inventory.loaded
            found.inventory_at = now
