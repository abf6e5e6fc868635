"""run_signal_listener: SIGTERM/SIGINT start a graceful shutdown (a second one forces it),
SIGHUP asks for a reload."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

import trio

log = logging.getLogger(__name__)


async def run_signal_listener(
    shutdown: trio.Event,
    force: Callable[[], None],
    reload: Callable[[], None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGHUP:
                reload()
            elif shutdown.is_set():
                log.warning("second %s: stopping now", signal.Signals(signum).name)
                force()
            else:
                log.info("%s: draining in-flight requests", signal.Signals(signum).name)
                shutdown.set()
