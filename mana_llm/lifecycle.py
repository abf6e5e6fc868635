"""Where the process is in its life, for orchestrators: `/livez` (the process serves) and
`/readyz` (start-up is done, first probe round included, and no drain has begun); and the
exchanges still open, so the drain deadline can cut them honestly (`cut_open_exchanges`)."""

from __future__ import annotations

from collections.abc import Callable

import attrs

Cut = Callable[[], None]


@attrs.define(eq=False)
class Lifecycle:
    started: bool = False  # start-up is over: the first probe round has finished
    draining: bool = False  # SIGTERM/SIGINT arrived: finishing in-flight work, taking no more
    cutting: bool = False  # the drain deadline passed: open exchanges are being cut
    drain_ends_at: float | None = None  # when the drain's budget ends (the clock of begin_drain)
    # with several workers: has every worker of the instance started (readiness.py)?
    peers_ready: Callable[[], bool] = lambda: True
    _open: set[Cut] = attrs.field(factory=set)

    @property
    def ready(self) -> bool:
        return self.started and not self.draining and self.peers_ready()

    def mark_started(self) -> None:
        self.started = True

    def begin_drain(self, ends_at: float | None = None) -> None:
        """SIGTERM: no more readiness; `ends_at`: when DRAIN_DELAY + GRACEFUL_TIMEOUT are
        over (what is flushed after the drain, traces, fits in what is left of it)."""
        self.draining = True
        self.drain_ends_at = ends_at

    def drain_left_s(self, now: float, otherwise: float) -> float:
        """The drain's budget left at `now` (at least a second), or `otherwise` before any."""
        if self.drain_ends_at is None:
            return otherwise
        return max(1.0, self.drain_ends_at - now)

    def track(self, cut: Cut) -> None:
        """An exchange is open; `cut` ends it when the drain deadline passes (at once when it
        already has)."""
        if self.cutting:
            cut()
            return
        self._open.add(cut)

    def untrack(self, cut: Cut) -> None:
        self._open.discard(cut)

    def cut_open_exchanges(self) -> int:
        """The drain deadline: every exchange still open is cut; returns how many."""
        self.cutting = True
        cuts, self._open = self._open, set()
        for cut in cuts:
            cut()
        return len(cuts)
