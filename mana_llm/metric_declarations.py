"""The metrics the gateway exports, as data: attribute, kind, name, help, labels; the buckets
of every histogram; each gauge's multiprocess mode. metrics.py builds them."""

from __future__ import annotations

from typing import Literal

from prometheus_client import Counter, Gauge, Histogram

# sub-millisecond gateway work up to multi-minute generations
BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
)
# attribute -> (kind, name, help, labels); histograms use BUCKETS
DECLARATIONS: tuple[
    tuple[str, type[Counter | Gauge | Histogram], str, str, tuple[str, ...]], ...
] = (
    (
        "llm_requests",
        Counter,
        "mana_llm_llm_requests",
        "Chat and embedding requests: requested and error counts by the requested model,"
        " success counts by the resolved one",
        ("provider", "model", "status"),
    ),
    (
        "alias_resolved",
        Counter,
        "mana_llm_alias_resolved",
        "Alias requests by the target that answered",
        ("alias", "target"),
    ),
    (
        "fallbacks",
        Counter,
        "mana_llm_fallback",
        "Moves from one chain entry to the next",
        ("from_model", "to_model", "reason"),
    ),
    (
        "provider_healthy",
        Gauge,
        "mana_llm_provider_healthy",
        "1 while the provider's circuit is closed, else 0",
        ("provider",),
    ),
    (
        "deployment_healthy",
        Gauge,
        "mana_llm_deployment_healthy",
        "1 while the deployment's circuit is closed, else 0",
        ("provider", "deployment"),
    ),
    (
        "deployment_in_flight",
        Gauge,
        "mana_llm_deployment_in_flight",
        "Calls in flight on the deployment now",
        ("provider", "deployment"),
    ),
    (
        "deployment_requests",
        Counter,
        "mana_llm_deployment_requests",
        "Calls to the deployment by outcome (success, failure)",
        ("provider", "deployment", "outcome"),
    ),
    (
        "request_duration",
        Histogram,
        "mana_llm_request_duration_seconds",
        "Whole requests, streams to their end",
        ("endpoint", "stream"),
    ),
    (
        "upstream_duration",
        Histogram,
        "mana_llm_upstream_duration_seconds",
        "The answering attempt, from its start to its last byte",
        ("provider",),
    ),
    (
        "ttft",
        Histogram,
        "mana_llm_time_to_first_token_seconds",
        "Streams: from the request to its first content",
        ("provider",),
    ),
    (
        "overhead",
        Histogram,
        "mana_llm_gateway_overhead_seconds",
        "Time spent in the gateway itself: the request minus the answering attempt",
        ("endpoint",),
    ),
    (
        "tokens",
        Counter,
        "mana_llm_tokens",
        "Tokens by kind, from upstream usage",
        ("provider", "model", "kind"),
    ),
    ("errors", Counter, "mana_llm_errors", "Failed requests by error type", ("error_type",)),
    ("active", Gauge, "mana_llm_active_requests", "Requests in flight", ("stream",)),
    ("alias_reloads", Counter, "mana_llm_alias_reloads", "aliases.yaml reloads", ("result",)),
    ("probes", Counter, "mana_llm_health_probe", "Health probes", ("provider", "result")),
    (
        "retries",
        Counter,
        "mana_llm_retries",
        "Same-target retries by provider and the failure that caused them: sent, or refused by"
        " the provider's retry budget",
        ("provider", "reason", "outcome"),
    ),
    (
        "stream_rescues",
        Counter,
        "mana_llm_stream_rescues",
        "Buffered streams that broke after their first content and were answered whole by a"
        " later chain entry",
        ("alias", "reason"),
    ),
    (
        "hedges",
        Counter,
        "mana_llm_hedges",
        "Hedged first tokens: the next entry started beside a silent one won or lost, or the"
        " hedge budget said no",
        ("alias", "outcome"),
    ),
    (
        "cache_requests",
        Counter,
        "mana_llm_cache_requests",
        "Cacheable endpoints' requests by what the response cache did",
        ("result",),
    ),
    (
        "cache_errors",
        Counter,
        "mana_llm_cache_errors",
        "Cache commands that failed or timed out (each served as a miss)",
        ("backend",),
    ),
    (
        "caller_requests",
        Counter,
        "mana_llm_caller_requests",
        "Inference requests per caller of the keys file: answered, failed, refused by a limit",
        ("caller", "outcome"),
    ),
    (
        "caller_tokens",
        Counter,
        "mana_llm_caller_tokens",
        "Tokens charged to each caller (a cache hit charges none)",
        ("caller", "kind"),
    ),
    (
        "caller_cost",
        Counter,
        "mana_llm_caller_cost_usd",
        "What each caller's requests cost, in US dollars, at the providers file's prices",
        ("caller",),
    ),
    (
        "caller_budget",
        Gauge,
        "mana_llm_caller_budget_remaining",
        "What is left of each caller's budget this period (tokens or usd), as of its last"
        " admission",
        ("caller", "unit"),
    ),
    (
        "limit_refusals",
        Counter,
        "mana_llm_limit_refusals",
        "Requests refused by a caller's limit: rpm, tpm, max_parallel, budget, model",
        ("caller", "limit"),
    ),
    (
        "limits_store_failures",
        Counter,
        "mana_llm_limits_store_failures",
        "Calls to the shared limits store (Redis) that failed or timed out",
        ("store",),
    ),
    (
        "trace_spans_dropped",
        Counter,
        "mana_llm_trace_spans_dropped",
        "Spans the trace exporter lost: its queue was full, or an export failed",
        ("reason",),
    ),
)


# With several workers (multiprocess mode) a scrape shows, for in-flight requests, the sum over
# live workers; for a provider's health, the lowest value among live workers: 1 only while every
# worker's circuit for it is closed (each worker keeps its own circuits).
GAUGE_MODES: dict[str, Literal["livesum", "livemin", "mostrecent"]] = {
    "active": "livesum",
    "provider_healthy": "livemin",
    "deployment_healthy": "livemin",
    "deployment_in_flight": "livesum",
    "caller_budget": "mostrecent",  # every worker reads the shared counters: the latest wins
}
