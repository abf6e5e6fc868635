"""One worker's part of a caller's counters (`access/counters.py`) over many windows: the
counts stay exact, settlements find their request, and the arrays stay bounded, however many
times they drop the requests that left the window."""

from __future__ import annotations

from mana_llm.access.counters import COMPACT_AT, Part
from mana_llm.access.limits import WINDOW_S

T0 = 1_780_000_000.0
STEP = 0.01  # a request every 10 ms: 6,000 in a window, more than COMPACT_AT


def test_counts_stay_exact_and_the_arrays_bounded_across_compactions() -> None:
    part = Part(lease_s=600.0)
    sent: list[tuple[float, int]] = []  # every request's time and what it counts
    total = 3 * int(WINDOW_S / STEP)
    for n in range(total):
        now = T0 + n * STEP
        part.expire(now)
        part.add(f"t{n}", now, 10, 0.0)
        sent.append((now, 10))
        if n >= 100:  # settled 100 requests later, with what it used (n % 7 tokens)
            part.settle(f"t{n - 100}", (n - 100) % 7)
            sent[n - 100] = (sent[n - 100][0], (n - 100) % 7)
        if n % 997 == 0 or n == total - 1:
            inside = [tokens for at, tokens in sent if at > now - WINDOW_S]
            requests, tokens, first, newest = part.row()[:4]
            assert (requests, tokens) == (len(inside), sum(inside)), n
            assert newest == now and first == next(at for at, _ in sent if at > now - WINDOW_S)
        assert len(part.times) <= 2 * int(WINDOW_S / STEP) + COMPACT_AT + 1
    assert part.gone > 0  # the arrays did drop what left the window


def test_a_settlement_after_its_request_left_the_window_changes_nothing() -> None:
    part = Part(lease_s=600.0)
    part.add("old", T0, 50, 0.0)
    for n in range(COMPACT_AT):  # enough, once gone from the window, to be dropped
        part.add(f"a{n}", T0 + 1 + n * 1e-4, 1, 0.0)
    assert part.expire(T0 + WINDOW_S + 2)  # all of them left the window
    part.add("new", T0 + WINDOW_S + 2, 1, 0.0)
    assert part.gone == COMPACT_AT + 1 and part.row()[:2] == (1, 1)
    part.settle("old", 5000)
    assert part.row()[:2] == (1, 1)
    part.settle("new", 3)  # in the window: counted anew
    assert part.row()[:2] == (1, 3)
    assert part.rtokens == COMPACT_AT  # both closed: only the a-requests still reserve
