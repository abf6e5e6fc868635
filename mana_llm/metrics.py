"""The Prometheus metrics, on a registry the composition root (or a test) builds."""

from __future__ import annotations

import attrs
from prometheus_client import CollectorRegistry, Gauge


@attrs.define(eq=False)
class Metrics:
    registry: CollectorRegistry
    provider_healthy: Gauge = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.provider_healthy = Gauge(
            "mana_llm_provider_healthy",
            "1 while the provider's circuit is closed, else 0",
            ["provider"],
            registry=self.registry,
        )
