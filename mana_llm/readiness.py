"""Readiness across the workers of one instance (WORKERS > 1): `/readyz` of any worker says 200
only once every worker has started (it listens and its first probe round is over), so an
orchestrator never sends traffic while some workers are still coming up.

Each worker, once started, leaves a marker file `ready-<n>` in the instance's own directory
(the metrics directory its supervisor made, wiped at start); a worker asks whether all the
markers are there, and once they have been, stops asking (a worker restarted later does not
take the instance out of rotation: the others serve while it starts).
"""

from __future__ import annotations

import os

import attrs

PREFIX = "ready-"


@attrs.define(eq=False)
class WorkerMarkers:
    directory: str
    number: int  # this worker's
    count: int  # the instance's workers
    _all_seen: bool = False

    def mark_ready(self) -> None:
        with open(os.path.join(self.directory, f"{PREFIX}{self.number}"), "w"):
            pass

    def all_ready(self) -> bool:
        if not self._all_seen:
            self._all_seen = all(
                os.path.exists(os.path.join(self.directory, f"{PREFIX}{n}"))
                for n in range(1, self.count + 1)
            )
        return self._all_seen


def is_marker(name: str) -> bool:
    return name.startswith(PREFIX)
