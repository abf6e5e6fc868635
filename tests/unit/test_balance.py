"""The choice among a provider's deployments (routing/balance.py), rule by rule."""

from __future__ import annotations

import random
from collections import Counter
from contextlib import ExitStack

from mana_llm.domain import Inventory
from mana_llm.health.breaker import BreakerPolicy
from mana_llm.health.providers import CircuitState, ProviderHealthCache
from mana_llm.routing.balance import Balancer, Deployment, Deployments
from tests.fakes.providers import FakeProvider

M = "gemma3:4b"


def balancer(*deployments: Deployment, local: bool = True, cold_load_s: float = 10.0) -> Balancer:
    health = ProviderHealthCache(BreakerPolicy(failure_threshold=1, backoff_s=5.0))
    group = Deployments("ollama", list(deployments), cold_load_s, local)
    return Balancer({"ollama": group}, health, random.Random(7))


def host(
    name: str,
    weight: float = 1.0,
    max_in_flight: int | None = None,
    installed: tuple[str, ...] | None = (M,),
    loaded: tuple[str, ...] = (),
) -> Deployment:
    return Deployment(
        name,
        FakeProvider("ollama"),
        weight,
        max_in_flight,
        installed=None if installed is None else frozenset(installed),
        loaded=frozenset(loaded),
    )


def test_least_in_flight_relative_to_weight_spreads_by_weight() -> None:
    b = balancer(host("a"), host("b"), host("c", weight=2.0), local=False)
    with ExitStack() as held:  # 8 calls in flight at once, each placed as it arrives
        for _ in range(8):
            held.enter_context(b.running(b.choose("ollama", M, 0.0) or host("none")))
        assert {d.name: d.in_flight for d in b.deployments("ollama")} == {"a": 2, "b": 2, "c": 4}
    assert all(d.in_flight == 0 for d in b.deployments("ollama"))  # counted out again


def test_ties_are_broken_at_random() -> None:
    b = balancer(host("a"), host("b"), host("c"), local=False)
    chosen = Counter(b.choose("ollama", M, 0.0).name for _ in range(300))  # type: ignore[union-attr]
    assert set(chosen) == {"a", "b", "c"} and min(chosen.values()) > 60


def test_a_host_without_the_model_is_never_chosen_while_another_lists_it() -> None:
    b = balancer(
        host("a", installed=("other:1b",)),
        host("b", installed=(M, "gemma3:latest")),
        host("c", installed=("x:1b",)),
    )
    assert {b.choose("ollama", M, 0.0).name for _ in range(50)} == {"b"}  # type: ignore[union-attr]
    assert b.choose("ollama", "gemma3", 0.0).name == "b"  # type: ignore[union-attr]  # :latest
    # no host lists it: the lists may be stale, so any host may be asked (its 404 will say)
    assert b.choose("ollama", "new:7b", 0.0) is not None


def test_affinity_to_the_host_with_the_model_loaded() -> None:
    b = balancer(host("a"), host("b", loaded=(M,)), host("c"))
    b.deployments("ollama")[1].in_flight = 3  # busier, but it has the model loaded
    assert {b.choose("ollama", M, 0.0).name for _ in range(20)} == {"b"}  # type: ignore[union-attr]


def test_a_full_loaded_host_is_passed_over_for_another_loaded_one() -> None:
    b = balancer(host("a", max_in_flight=2, loaded=(M,)), host("b", loaded=(M,)), host("c"))
    b.deployments("ollama")[0].in_flight = 2
    b.deployments("ollama")[1].in_flight = 5  # no limit: its own queue is Ollama's business
    assert b.choose("ollama", M, 0.0).name == "b"  # type: ignore[union-attr]


def test_spill_to_a_cold_host_only_when_waiting_is_worse_than_a_cold_load() -> None:
    loaded = host("a", max_in_flight=2, loaded=(M,))
    b = balancer(loaded, host("b"), cold_load_s=10.0)
    loaded.in_flight = 2
    loaded.mean_s = 8.0  # one ahead of us over two slots: a 4 s wait beats a 10 s cold load
    assert b.choose("ollama", M, 0.0).name == "a"  # type: ignore[union-attr]
    loaded.in_flight = 5
    loaded.mean_s = 8.0  # four ahead: 16 s of waiting, worse than loading it elsewhere
    assert b.choose("ollama", M, 0.0).name == "b"  # type: ignore[union-attr]


def test_traffic_and_probes_keep_what_is_loaded() -> None:
    a = host("a", loaded=("other:1b",))
    b = balancer(a, host("b"))
    b.answered(a, M, 2.0)  # it answered for M: M is loaded now, perhaps in place of the other
    assert a.loaded == {M} and a.mean_s == 2.0
    b.answered(a, M, 4.0)
    assert a.mean_s == 2.4  # a moving mean
    b.probed("a", Inventory(frozenset({M, "x:1b"}), frozenset({"x:1b"})), 30.0)
    assert a.loaded == {"x:1b"} and a.inventory_at == 30.0
    assert a.installed == frozenset({M, "x:1b"})
    b.probed("a", Inventory(), 60.0)  # a shape it could not read: what it knew stays
    assert a.loaded == {"x:1b"}


def test_an_open_circuit_or_a_trial_under_way_is_passed_over() -> None:
    b = balancer(host("a"), host("b"), local=False)
    b.health.record_failure("a", 0.0, "refused")  # threshold 1: open for 5 s
    assert b.health.state("a", 0.0) is CircuitState.OPEN
    assert {b.choose("ollama", M, 1.0).name for _ in range(20)} == {"b"}  # type: ignore[union-attr]
    assert b.choose("ollama", M, 5.0, frozenset({"b"})).name == "a"  # type: ignore[union-attr]
    # a half-open a: its one trial was just taken; the next call goes elsewhere or nowhere
    assert b.choose("ollama", M, 5.0, frozenset({"b"})) is None


def test_round_robin_takes_turns_whatever_is_loaded() -> None:
    b = balancer(host("a", loaded=(M,)), host("b"), host("c"))
    b.round_robin = True
    assert [b.choose("ollama", M, 0.0).name for _ in range(6)] == ["b", "c", "a", "b", "c", "a"]  # type: ignore[union-attr]


def test_a_deployment_is_described_by_its_provider_alone_when_it_is_the_only_one() -> None:
    assert balancer(host("ollama-1")).describe("ollama-1") == "ollama"
    assert balancer(host("gpu-a"), host("gpu-b")).describe("gpu-b") == "ollama (gpu-b)"


def test_a_burst_for_two_models_with_nothing_loaded_splits_one_model_per_host() -> None:
    b = balancer(host("a", installed=(M, "x:1b")), host("b", installed=(M, "x:1b")))
    first = b.choose("ollama", M, 0.0)
    assert first is not None and first.loaded == {M}  # it is loading M now
    second = b.choose("ollama", "x:1b", 0.0)  # the first host would have to evict M for it
    assert second is not None and second is not first and second.loaded == {"x:1b"}
    for _ in range(10):  # from then on each model goes where it is
        assert b.choose("ollama", M, 0.0) is first
        assert b.choose("ollama", "x:1b", 0.0) is second
