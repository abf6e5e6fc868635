"""One process's part of one caller's counters (`access/sql_limits.py`): its requests in the
window, oldest first, with their tokens, and its open requests with their reservations and
leases, with running sums, so that an admission costs the same however many requests the
window holds."""

from __future__ import annotations

from collections import deque

import attrs

from mana_llm.access.limits import WINDOW_S


@attrs.define(eq=False)
class Part:
    """This worker's part of one caller's counters, with running sums (an admission costs the
    same however many requests are in the window)."""

    window: deque[list[float]] = attrs.field(factory=deque)  # [time, tokens, in window: 1|0]
    tokens: float = 0.0  # in the window
    tickets: dict[str, list[float]] = attrs.field(factory=dict)  # unsettled -> window entry
    open: dict[str, tuple[float, int, float]] = attrs.field(factory=dict)  # expiry, tokens, usd
    rtokens: int = 0  # reserved by the open requests
    rusd: float = 0.0
    lease_s: float = 0.0

    def add(self, ticket: str, now: float, tokens: int, usd: float) -> None:
        entry = [now, float(tokens), 1.0]
        self.window.append(entry)
        self.tokens += tokens
        self.tickets[ticket] = entry
        self.open[ticket] = (now + self.lease_s, tokens, usd)
        self.rtokens += tokens
        self.rusd += usd

    def settle(self, ticket: str, tokens: int) -> None:
        entry = self.tickets.pop(ticket, None)
        if entry is not None and entry[2]:  # what it used counts in the window from now on
            self.tokens += tokens - entry[1]
            entry[1] = float(tokens)
        self._close(ticket)

    def _close(self, ticket: str) -> None:
        found = self.open.pop(ticket, None)
        if found is not None:
            self.rtokens -= found[1]
            self.rusd -= found[2]

    def expire(self, now: float) -> bool:
        """Whether anything left the window or outlived its lease."""
        changed = False
        while self.window and self.window[0][0] <= now - WINDOW_S:
            entry = self.window.popleft()
            self.tokens -= entry[1]
            entry[2] = 0.0
            changed = True
        # leases only grow, in the order requests came: the first open one ends first
        if self.open and next(iter(self.open.values()))[0] <= now:
            for ticket in [t for t, (expiry, _, _) in self.open.items() if expiry <= now]:
                self._close(ticket)
                self.tickets.pop(ticket, None)
            changed = True
        return changed

    def next_change(self) -> float | None:
        times = [self.window[0][0] + WINDOW_S] if self.window else []
        if self.open:
            times.append(next(iter(self.open.values()))[0])
        return min(times, default=None)

    def row(self) -> tuple[int, int, float | None, float | None, int, int, float]:
        window = self.window
        first, newest = (window[0][0], window[-1][0]) if window else (None, None)
        return (len(window), round(self.tokens), first, newest, len(self.open), self.rtokens,
                max(0.0, self.rusd))  # fmt: skip
