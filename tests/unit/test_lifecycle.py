"""What is flushed after the drain (traces) fits in what is left of its budget."""

from __future__ import annotations

from mana_llm.lifecycle import Lifecycle


def test_the_drains_budget_left() -> None:
    life = Lifecycle()
    assert life.drain_left_s(10.0, otherwise=30.0) == 30.0  # no drain ran: the default
    life.begin_drain(ends_at=45.0)  # SIGTERM at 10: DRAIN_DELAY 5 + GRACEFUL_TIMEOUT 30
    assert life.draining and not life.ready
    assert life.drain_left_s(40.0, otherwise=30.0) == 5.0
    assert life.drain_left_s(50.0, otherwise=30.0) == 1.0  # overrun: a last second
