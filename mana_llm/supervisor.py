"""Several worker processes behind one address: `python -m mana_llm` with WORKERS > 1.

The supervisor binds the address first (SO_REUSEPORT, not listening: it reserves the port and
fails fast with one line when it is taken), then starts WORKERS copies of the gateway, each
running its whole root nursery and listening on its own SO_REUSEPORT socket on that address,
so the kernel spreads connections evenly over them. It restarts a worker that dies (with
backoff, logged), forwards SIGHUP to every worker, and on SIGTERM/SIGINT has every worker
drain (DRAIN_DELAY, GRACEFUL_TIMEOUT) and exits 0 when all are done; a second signal kills them.

Metrics are exact across workers: prometheus-client's multiprocess mode, in a directory that
belongs to this instance alone (a private temporary one unless PROMETHEUS_MULTIPROC_DIR names
one), wiped at start, dead workers marked, removed at exit when it was ours. The workers leave
their readiness markers there too (readiness.py): /readyz waits for every worker.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence

import attrs
import trio
from prometheus_client import multiprocess

from mana_llm import readiness
from mana_llm.access.assemble import preflight
from mana_llm.server_config import hypercorn_config, reuse_port_socket
from mana_llm.service import load_aliases
from mana_llm.settings import Settings, StartupError

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = 0.5
MAX_RESTART_BACKOFF_S = 30.0
STEADY_S = 60.0  # a worker up this long has its restart backoff reset


@attrs.define(eq=False)
class Worker:
    number: int
    process: trio.Process | None = None
    backoff_s: float = RESTART_BACKOFF_S


@attrs.define(eq=False)
class Supervisor:
    settings: Settings
    argv: Sequence[str]  # passed on to every worker (--config)
    env: Mapping[str, str]  # the supervisor's environment, which every worker inherits
    metrics_dir: str
    port: int
    workers: list[Worker] = attrs.field(factory=list)
    stopping: bool = False
    stop_requested: trio.Event = attrs.field(factory=trio.Event)

    def worker_env(self, worker: Worker) -> dict[str, str]:
        return {
            **self.env,
            "WORKERS": "1",
            "MANA_LLM_WORKER": str(worker.number),
            "MANA_LLM_WORKERS": str(len(self.workers)),
            "HOST": self.settings.host,
            "PORT": str(self.port),
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
        }

    async def run_worker(self, worker: Worker) -> None:
        """Keep one worker running until the supervisor stops."""
        while not self.stopping:
            command = [sys.executable, "-m", "mana_llm", *self.argv]
            process = await trio.lowlevel.open_process(
                command, env=self.worker_env(worker), stdin=subprocess.DEVNULL
            )
            worker.process = process
            started = trio.current_time()
            code = await process.wait()
            multiprocess.mark_process_dead(process.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
            if self.stopping:
                return
            if trio.current_time() - started > STEADY_S:
                worker.backoff_s = RESTART_BACKOFF_S
            log.warning(
                "worker %d (pid %d) exited with %s; restarting in %gs",
                worker.number,
                process.pid,
                code,
                worker.backoff_s,
            )
            await trio.sleep(worker.backoff_s)
            worker.backoff_s = min(worker.backoff_s * 2, MAX_RESTART_BACKOFF_S)

    def signal_all(self, signum: int) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signum)

    async def run_signals(self, *, task_status: trio.TaskStatus[None]) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: reloading aliases in every worker")
                    self.signal_all(signal.SIGHUP)
                elif self.stopping:
                    log.warning("second %s: stopping the workers now", signal.Signals(signum).name)
                    self.signal_all(signal.SIGKILL)
                else:
                    log.info("%s: every worker drains", signal.Signals(signum).name)
                    self.stopping = True
                    self.stop_requested.set()
                    self.signal_all(signal.SIGTERM)


async def run(
    settings: Settings,
    argv: Sequence[str],
    env: Mapping[str, str],
    config_path: str | None = None,
) -> None:
    """Supervise settings.workers workers until they have all drained after a signal. What
    would stop every worker from starting (the alias file, the keys file, hypercorn.toml, the
    port) stops the supervisor first, with one line."""
    load_aliases(settings)
    preflight(settings)  # the keys file, the prices, the ledger
    hypercorn_config(settings, config_path)
    try:
        reserved = reuse_port_socket(_bind(settings))
    except OSError as exc:
        raise StartupError(f"cannot listen on {_bind(settings)}: {exc.strerror or exc}") from None
    own_dir = settings.metrics_dir is None
    metrics_dir = settings.metrics_dir or tempfile.mkdtemp(prefix="mana-llm-metrics-")
    os.makedirs(metrics_dir, exist_ok=True)
    _wipe(metrics_dir)
    try:
        port = reserved.getsockname()[1]
        supervisor = Supervisor(settings, argv, env, metrics_dir, port)
        supervisor.workers = [Worker(n) for n in range(1, settings.workers + 1)]
        log.info(
            "mana-llm supervisor: %d workers on %s:%d",
            settings.workers,
            settings.host,
            supervisor.port,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run_signals)
            for worker in supervisor.workers:
                nursery.start_soon(supervisor.run_worker, worker)
            await supervisor.stop_requested.wait()  # each worker drains and exits by itself
            with trio.move_on_after(_patience(settings)):
                for worker in supervisor.workers:
                    if worker.process is not None:
                        await worker.process.wait()
            supervisor.signal_all(signal.SIGKILL)  # any still there after the patience
            nursery.cancel_scope.cancel()
    finally:
        reserved.close()
        if own_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _patience(settings: Settings) -> float:
    """How long the workers may take to drain before they are killed."""
    return settings.drain_delay_s + settings.graceful_timeout_s + 10.0


def _bind(settings: Settings) -> str:
    host = settings.host
    return f"[{host}]:{settings.port}" if ":" in host else f"{host}:{settings.port}"


def _wipe(directory: str) -> None:
    """A metrics directory starts empty: files of an earlier run would be summed in, and its
    workers' readiness markers would say ready too soon."""
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if os.path.isfile(path) and (name.endswith(".db") or readiness.is_marker(name)):
            os.remove(path)
