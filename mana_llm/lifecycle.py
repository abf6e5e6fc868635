"""Where the process is in its life, for orchestrators: `/livez` (the process serves) and
`/readyz` (start-up is done, first probe round included, and no drain has begun)."""

from __future__ import annotations

import attrs


@attrs.define(eq=False)
class Lifecycle:
    started: bool = False  # start-up is over: the first probe round has finished
    draining: bool = False  # SIGTERM/SIGINT arrived: finishing in-flight work, taking no more

    @property
    def ready(self) -> bool:
        return self.started and not self.draining

    def mark_started(self) -> None:
        self.started = True

    def begin_drain(self) -> None:
        self.draining = True
