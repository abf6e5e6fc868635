"""Prometheus metrics on a registry the composition root (or a test) builds, and the
per-request trace every layer fills in and `Metrics.finish` turns into series.

Label values are bounded: endpoints and error types come from closed vocabularies; a model
label only takes a model that was configured (an alias or one of its targets) or that a
provider answered for; anything else a caller sends collapses into `other`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from mana_llm import errors
from mana_llm.domain import Answered, Usage
from mana_llm.errors import AttemptRecord
from mana_llm.metric_declarations import BUCKETS, DECLARATIONS, GAUGE_MODES

OTHER = "other"
CACHE_RESULTS = ("hit", "miss", "bypass", "error")
MAX_MODEL_LABELS = 2000

ERROR_TYPES = (
    "invalid_request",
    "unauthorized",
    "not_found",
    "payload_too_large",
    "provider_not_configured",
    "upstream_timeout",
    "upstream_rate_limited",
    "upstream_error",
    "all_providers_failed",
    "client_disconnected",
    "server_shutting_down",
    "rate_limit_exceeded",
    "insufficient_quota",
    "model_not_allowed",
    "forbidden",
    "limits_unavailable",
    "internal",
)
CALLER_OUTCOMES = ("answered", "failed", "refused")
LIMITS = ("rpm", "tpm", "max_parallel", "budget", "model")


@attrs.define(eq=False)
class RequestTrace:
    """What happened to one request; filled in as it goes, observed once at its end."""

    request_id: str
    started_at: float
    endpoint: str = "other"  # chat | embeddings | models | other
    stream: bool = False
    model: str | None = None  # as the caller sent it (logs)
    label_model: str | None = None  # the alias, or the resolved provider/model it named (labels)
    resolved: str | None = None  # provider/model that answered
    attempts: tuple[AttemptRecord, ...] = ()  # entries that failed or were skipped
    upstream_started_at: float | None = None
    upstream_ended_at: float | None = None
    first_token_at: float | None = None
    usage: Usage | None = None
    finish_reason: str | None = None  # why the answer stopped, when it said (traces)
    status: int | None = None  # None at the end: the client went away
    error: str | None = None  # an ERROR_TYPES value
    active: str | None = None  # the `stream` label it is counted under in active_requests
    cache: str | None = None  # hit | miss | bypass | error; None: the cache is off
    hedge: str | None = None  # won | lost | budget_exhausted
    deployment: str | None = None  # the deployment that answered
    caller: str | None = None  # the keys file's caller (None: anonymous)
    limit: str | None = None  # what refused the caller: rpm | tpm | max_parallel | budget | model
    relayed: int = 0  # stream chunks sent to the client (a charge's estimate without usage)
    charged: tuple[int, int, float] | None = None  # prompt, completion tokens, usd

    def route(self, model: str, label: str) -> None:
        """What the caller asked for, and the alias or `provider/model` it resolved to."""
        self.model, self.label_model = model, label

    def answered(
        self, answered: Answered[Any], usage: Usage | None = None, *, stream: bool = False
    ) -> None:
        """What the gateway did for a request it answered (a stream: up to its commit)."""
        self.resolved = answered.target.resolved
        self.attempts = answered.failed
        self.cache = answered.cache
        self.hedge = answered.hedge
        self.deployment = answered.deployment
        if answered.cached:
            return
        self.upstream_started_at = answered.started_at
        if stream:
            self.first_token_at = answered.ended_at  # the upstream's end is known at the end
            return
        self.upstream_ended_at = answered.ended_at
        self.usage = usage

    def fail(self, error: errors.GatewayError) -> None:
        self.status = error.status
        self.error = error.error_type
        if error.cache is not None:
            self.cache = error.cache
        if error.attempts and not self.attempts:
            self.attempts = error.attempts


@attrs.define(eq=False, slots=False)
class Metrics:
    registry: CollectorRegistry
    multiprocess_dir: str | None = None  # several workers: a scrape sums their files
    _known_models: set[str] = attrs.field(factory=set)
    llm_requests: Counter = attrs.field(init=False)
    alias_resolved: Counter = attrs.field(init=False)
    fallbacks: Counter = attrs.field(init=False)
    provider_healthy: Gauge = attrs.field(init=False)
    deployment_healthy: Gauge = attrs.field(init=False)
    deployment_in_flight: Gauge = attrs.field(init=False)
    deployment_requests: Counter = attrs.field(init=False)
    _deployments: dict[str, str] = attrs.field(init=False, factory=dict)  # name -> provider
    _configured: set[str] = attrs.field(init=False, factory=set)
    request_duration: Histogram = attrs.field(init=False)
    upstream_duration: Histogram = attrs.field(init=False)
    ttft: Histogram = attrs.field(init=False)
    overhead: Histogram = attrs.field(init=False)
    tokens: Counter = attrs.field(init=False)
    errors: Counter = attrs.field(init=False)
    active: Gauge = attrs.field(init=False)
    alias_reloads: Counter = attrs.field(init=False)
    probes: Counter = attrs.field(init=False)
    retries: Counter = attrs.field(init=False)
    stream_rescues: Counter = attrs.field(init=False)
    hedges: Counter = attrs.field(init=False)
    cache_requests: Counter = attrs.field(init=False)
    cache_errors: Counter = attrs.field(init=False)
    caller_requests: Counter = attrs.field(init=False)
    caller_tokens: Counter = attrs.field(init=False)
    caller_cost: Counter = attrs.field(init=False)
    caller_budget: Gauge = attrs.field(init=False)
    limit_refusals: Counter = attrs.field(init=False)
    limits_store_failures: Counter = attrs.field(init=False)
    trace_spans_dropped: Counter = attrs.field(init=False)
    # each labelled child found once (`labels()` takes a lock and checks its values every call)
    _children: dict[tuple[Any, ...], Any] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        for attr, kind, name, doc, labels in DECLARATIONS:
            metric: Counter | Gauge | Histogram
            if kind is Histogram:
                metric = Histogram(name, doc, labels, registry=self.registry, buckets=BUCKETS)
            elif kind is Gauge:
                mode = GAUGE_MODES[attr]
                metric = Gauge(name, doc, labels, registry=self.registry, multiprocess_mode=mode)
            else:
                metric = kind(name, doc, labels, registry=self.registry)
            setattr(self, attr, metric)
        # label sets known in advance are exported at 0, so alerts see them before any event
        for error_type in ERROR_TYPES:
            self.errors.labels(error_type)
        for result in CACHE_RESULTS:
            self.cache_requests.labels(result)
        for result in ("success", "error"):
            self.alias_reloads.labels(result)
        for reason in ("queue_full", "export_failed"):
            self.trace_spans_dropped.labels(reason)

    def exposition(self) -> CollectorRegistry:
        """What /metrics shows: this process's registry, or every worker's metrics summed."""
        if self.multiprocess_dir is None:
            return self.registry
        summed = CollectorRegistry()
        MultiProcessCollector(summed, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return summed

    def start_providers(
        self, configured: list[str], deployments: dict[str, str] | None = None
    ) -> None:
        """Configured providers and their deployments (name -> provider) start with a closed
        circuit, nothing in flight and their counters at 0."""
        for name in configured:
            self.provider_healthy.labels(name).set(1)
            for result in ("success", "failure"):
                self.probes.labels(name, result)
        self._configured = set(configured)
        self.know_deployments(deployments or {})

    def know_deployments(self, deployments: dict[str, str]) -> None:
        """Deployments (name -> provider) not seen before start closed, with nothing in
        flight and their counters at 0; those already known keep their values (a reload)."""
        for deployment, provider in deployments.items():
            if provider not in self._configured or deployment in self._deployments:
                continue
            self._deployments[deployment] = provider
            self.deployment_healthy.labels(provider, deployment).set(1)
            self.deployment_in_flight.labels(provider, deployment).set(0)
            for outcome in ("success", "failure"):
                self.deployment_requests.labels(provider, deployment, outcome)

    def in_flight(self, deployment: str, count: int) -> None:
        provider = self._deployments.get(deployment)
        if provider is not None:
            self._at(self.deployment_in_flight, provider, deployment).set(count)

    def deployment_health(self, deployment: str, closed: bool) -> None:
        provider = self._deployments.get(deployment)
        if provider is not None:
            self._at(self.deployment_healthy, provider, deployment).set(1 if closed else 0)

    def know_models(self, models: Any) -> None:
        """Configured model names (aliases and their targets) may appear as labels."""
        for model in models:
            self._remember(str(model))

    def _remember(self, model: str) -> None:
        if len(self._known_models) < MAX_MODEL_LABELS:
            self._known_models.add(model)

    def model_label(self, model: str | None) -> str:
        return model if model is not None and model in self._known_models else OTHER

    def _at(self, metric: Any, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def begin(self, trace: RequestTrace) -> None:
        """Count the request as active; call once its `stream` flag is known."""
        trace.active = _flag(trace.stream)
        self._at(self.active, trace.active).inc()

    def finish(self, trace: RequestTrace, now: float) -> None:
        if trace.active is not None:
            self._at(self.active, trace.active).dec()
        if trace.status is None:
            trace.error = "client_disconnected"
        if trace.error is not None:
            self._at(self.errors, trace.error).inc()
        if trace.cache is not None:
            self._at(self.cache_requests, trace.cache).inc()
        self._count_deployments(trace)
        for attempt in trace.attempts:
            if attempt.retry is not None:
                provider = attempt.model.partition("/")[0]  # a configured provider: bounded
                self._at(self.retries, provider, attempt.kind, attempt.retry).inc()
        total = now - trace.started_at
        self._at(self.request_duration, trace.endpoint, _flag(trace.stream)).observe(total)
        if trace.endpoint not in ("chat", "embeddings") or trace.model is None:
            return
        self._count_model_traffic(trace)
        if trace.caller is not None:
            self._count_caller(trace.caller, trace)
        if trace.upstream_started_at is not None and trace.resolved is not None:
            provider = trace.resolved.split("/", 1)[0]
            upstream = (trace.upstream_ended_at or now) - trace.upstream_started_at
            self._at(self.upstream_duration, provider).observe(upstream)
            self._at(self.overhead, trace.endpoint).observe(max(0.0, total - upstream))
            if trace.first_token_at is not None:
                self._at(self.ttft, provider).observe(trace.first_token_at - trace.started_at)

    def know_callers(self, callers: Iterable[str]) -> None:
        """The keys file's callers, their series at 0 (those known keep their values)."""
        for name in callers:
            for outcome in CALLER_OUTCOMES:
                self.caller_requests.labels(name, outcome)
            for kind in ("prompt", "completion"):
                self.caller_tokens.labels(name, kind)
            self.caller_cost.labels(name)
            for limit in LIMITS:
                self.limit_refusals.labels(name, limit)

    def budget_remaining(self, caller: str, unit: str, left: float) -> None:
        self._at(self.caller_budget, caller, unit).set(left)

    def _count_caller(self, caller: str, trace: RequestTrace) -> None:
        if trace.limit is not None:
            outcome = "refused"
            self._at(self.limit_refusals, caller, trace.limit).inc()
        else:
            outcome = "answered" if trace.error is None else "failed"
        self._at(self.caller_requests, caller, outcome).inc()
        if trace.charged is not None:
            prompt, completion, usd = trace.charged
            self._at(self.caller_tokens, caller, "prompt").inc(prompt)
            self._at(self.caller_tokens, caller, "completion").inc(completion)
            self._at(self.caller_cost, caller).inc(usd)

    def _count_deployments(self, trace: RequestTrace) -> None:
        """Every call a request made, by deployment: its failed tries and its answer."""
        for attempt in trace.attempts:
            name = attempt.deployment or ""
            if name in self._deployments:
                self._at(self.deployment_requests, self._deployments[name], name, "failure").inc()
        name = trace.deployment or ""
        if name in self._deployments and trace.error is None:
            self._at(self.deployment_requests, self._deployments[name], name, "success").inc()

    def _count_model_traffic(self, trace: RequestTrace) -> None:
        assert trace.model is not None
        answered = trace.error is None and trace.resolved is not None
        if answered:
            self._remember(trace.resolved or "")  # a provider answered for it: a real model
        requested = self.model_label(trace.label_model)
        requested_provider = _provider_of(requested)
        self._at(self.llm_requests, requested_provider, requested, "requested").inc()
        if trace.model.startswith("mana/"):  # a move down a chain; a direct request has none
            tried = [a.model for a in trace.attempts] + ([trace.resolved] if trace.resolved else [])
            for attempt, to_model in zip(trace.attempts, tried[1:], strict=False):
                if attempt.retry == "deployment":  # the same model elsewhere: no fallback
                    continue
                self._at(
                    self.fallbacks,
                    self.model_label(attempt.model),
                    self.model_label(to_model),
                    attempt.kind,
                ).inc()
        if not answered or trace.resolved is None:
            self._at(self.llm_requests, requested_provider, requested, "error").inc()
            return
        provider = _provider_of(trace.resolved)
        self._at(self.llm_requests, provider, trace.resolved, "success").inc()
        if trace.model.startswith("mana/") and requested != OTHER:
            self._at(self.alias_resolved, requested, trace.resolved).inc()
            for attempt in trace.attempts:
                if attempt.after_content:
                    self._at(self.stream_rescues, requested, attempt.kind).inc()
            if trace.hedge is not None:
                self._at(self.hedges, requested, trace.hedge).inc()
        if trace.usage is not None and trace.cache != "hit":  # a hit spends no tokens
            self._at(self.tokens, provider, trace.resolved, "prompt").inc(trace.usage.prompt_tokens)
            self._at(self.tokens, provider, trace.resolved, "completion").inc(
                trace.usage.completion_tokens
            )


def _flag(stream: bool) -> str:
    return "true" if stream else "false"


def _provider_of(model: str) -> str:
    if model == OTHER:
        return OTHER
    prefix, sep, _ = model.partition("/")
    return prefix if sep else "ollama"
