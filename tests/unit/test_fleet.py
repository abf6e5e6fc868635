"""A reload of the deployments (assembly.Fleet.reconcile): what still exists keeps its object
(its calls in flight, what it holds) and so its breaker, which is keyed by its name; what is
new is built; what is gone is retired."""

from __future__ import annotations

import trio

from mana_llm.assembly import Fleet, http_transport, image_fetcher
from mana_llm.health.breaker import BreakerPolicy
from mana_llm.health.providers import CircuitState, ProviderHealthCache
from mana_llm.routing.balance import Balancer
from tests.unit.test_provider_settings import settings

BEFORE = """
providers:
  ollama:
    deployments:
      - {name: gpu-a, base_url: "http://gpu-a:11434", max_in_flight: 2}
      - {name: gpu-b, base_url: "http://gpu-b:11434"}
"""
AFTER = """
providers:
  ollama:
    cold_load_s: 30
    deployments:
      - {name: gpu-a, base_url: "http://gpu-a:11434", max_in_flight: 8}
      - {name: gpu-c, base_url: "http://gpu-c:11434"}
      - {name: gpu-b, base_url: "http://gpu-b2:11434"}
"""


async def test_a_reload_keeps_what_still_exists_and_builds_what_is_new() -> None:
    first = settings(BEFORE)
    fleet = Fleet(first, image_fetcher(first, http_transport(1)))
    health = ProviderHealthCache(BreakerPolicy(failure_threshold=1))
    balancer = Balancer(fleet.groups, health)
    a, b = balancer.deployments("ollama")
    a.in_flight = 2  # two calls under way on gpu-a
    health.record_failure("gpu-a", trio.current_time(), "503")
    changes = fleet.reconcile(settings(AFTER))
    assert changes == ["gpu-c added", "gpu-b changed"]
    kept, added, changed = balancer.deployments("ollama")
    assert kept is a and kept.in_flight == 2 and kept.max_in_flight == 8  # the same object
    assert health.state("gpu-a", trio.current_time()) is CircuitState.OPEN  # its breaker too
    assert added.name == "gpu-c" and added.base_url == "http://gpu-c:11434"
    assert changed is not b and changed.base_url == "http://gpu-b2:11434"  # new URL: rebuilt
    assert balancer.groups["ollama"].cold_load_s == 30.0
    assert fleet.reconcile(settings(BEFORE)) == ["gpu-b changed", "gpu-c removed"]
    assert [d.name for d in balancer.deployments("ollama")] == ["gpu-a", "gpu-b"]
    assert balancer.deployments("ollama")[0] is a
    await fleet.aclose()


async def test_a_new_provider_is_said_to_take_a_restart() -> None:
    first = settings(BEFORE)
    fleet = Fleet(first, image_fetcher(first, http_transport(1)))
    later = settings(BEFORE + "  vllm:\n    base_url: http://gpu:8000/v1\n")
    assert fleet.reconcile(later) == ["provider 'vllm' is new: it takes a restart"]
    await fleet.aclose()
