"""One process's part of one caller's counters (`access/sql_limits.py`): its requests in the
window, oldest first, with their tokens, and its open requests with their reservations and
leases, with running sums, so that an admission costs the same however many requests the
window holds. The window is two arrays of doubles (times, tokens), not an object per request:
a caller at 1,000 requests a second keeps 60,000 in it, which the garbage collector would
otherwise walk and the allocator keep apart."""

from __future__ import annotations

from array import array

import attrs

from mana_llm.access.limits import WINDOW_S, Counts

COMPACT_AT = 4096  # requests gone from the window before the arrays drop them


@attrs.define(eq=False)
class Part:
    """This worker's part of one caller's counters, with running sums (an admission costs the
    same however many requests are in the window)."""

    times: array[float] = attrs.field(factory=lambda: array("d"))  # oldest first, from `gone`
    costs: array[float] = attrs.field(factory=lambda: array("d"))  # tokens, as `times`
    head: int = 0  # the first index still in the window
    gone: int = 0  # requests dropped from the front of the arrays (indexes are `gone` + i)
    tokens: float = 0.0  # in the window
    tickets: dict[str, int] = attrs.field(factory=dict)  # unsettled -> its request's number
    open: dict[str, tuple[float, int, float]] = attrs.field(factory=dict)  # expiry, tokens, usd
    rtokens: int = 0  # reserved by the open requests
    rusd: float = 0.0
    lease_s: float = 0.0

    def add(self, ticket: str, now: float, tokens: int, usd: float) -> None:
        self.tickets[ticket] = self.gone + len(self.times)
        self.times.append(now)
        self.costs.append(tokens)
        self.tokens += tokens
        self.open[ticket] = (now + self.lease_s, tokens, usd)
        self.rtokens += tokens
        self.rusd += usd

    def settle(self, ticket: str, tokens: int) -> None:
        number = self.tickets.pop(ticket, None)
        i = -1 if number is None else number - self.gone
        if i >= self.head:  # still in the window: what it used counts there from now on
            self.tokens += tokens - self.costs[i]
            self.costs[i] = tokens
        self._close(ticket)

    def _close(self, ticket: str) -> None:
        found = self.open.pop(ticket, None)
        if found is not None:
            self.rtokens -= found[1]
            self.rusd -= found[2]

    def expire(self, now: float) -> bool:
        """Whether anything left the window or outlived its lease."""
        changed = False
        times, head, edge = self.times, self.head, now - WINDOW_S
        while head < len(times) and times[head] <= edge:
            self.tokens -= self.costs[head]
            head += 1
        if head > self.head:
            self.head, changed = head, True
            if head >= COMPACT_AT and head * 2 >= len(times):  # amortised: O(1) a request
                del times[:head], self.costs[:head]
                self.gone, self.head = self.gone + head, 0
        # leases only grow, in the order requests came: the first open one ends first
        if self.open and next(iter(self.open.values()))[0] <= now:
            for ticket in [t for t, (expiry, _, _) in self.open.items() if expiry <= now]:
                self._close(ticket)
                self.tickets.pop(ticket, None)
            changed = True
        return changed

    def next_change(self) -> float | None:
        times = [self.times[self.head] + WINDOW_S] if self.head < len(self.times) else []
        if self.open:
            times.append(next(iter(self.open.values()))[0])
        return min(times, default=None)

    def counts(self, spent: tuple[int, float, int]) -> Counts:
        """The part as the whole count (a worker alone), with the period's `spent`."""
        times, head = self.times, self.head
        newest = times[-1] if head < len(times) else None
        return Counts(len(times) - head, round(self.tokens), newest, len(self.open), self.rtokens,
                      max(0.0, self.rusd), *spent)  # fmt: skip

    def row(self) -> tuple[int, int, float | None, float | None, int, int, float]:
        times, head = self.times, self.head
        first, newest = (times[head], times[-1]) if head < len(times) else (None, None)
        return (len(times) - head, round(self.tokens), first, newest, len(self.open), self.rtokens,
                max(0.0, self.rusd))  # fmt: skip
