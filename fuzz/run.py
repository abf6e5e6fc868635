"""Schemathesis against the real gateway (a tool, like bench/: never a CI gate).

    python3 -m venv /tmp/fuzz && /tmp/fuzz/bin/pip install -r fuzz/requirements.txt
    .venv/bin/python fuzz/run.py --schemathesis /tmp/fuzz/bin/st --seconds 300

Starts fake Ollama and OpenAI-compatible upstreams on 127.0.0.1 (tolerant ones: any model
exists, garbage gets a 400 like a real upstream's) and the gateway in front of them, then runs
`st run fuzz/openai-trimmed.json` bounded by --seconds, with the `not_a_server_error` check
and every other conformance check. Prints schemathesis' report (each failure with a curl line
to reproduce it), then every 5xx the gateway logged, then the status counts.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
from collections import Counter
from functools import partial

import attrs
import trio
from prometheus_client import CollectorRegistry

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mana_llm import logs, service  # noqa: E402
from mana_llm.settings import Settings  # noqa: E402
from tests.e2e.stack import UPSTREAM_KEY, stack_env  # noqa: E402
from tests.fakes.server import FakeServer, Handler, Reply, Request  # noqa: E402
from tests.fakes.upstreams import FakeOllama, FakeOpenAI, openai_error  # noqa: E402


def lenient(handler: Handler, model: str) -> Handler:
    """Every model exists (the request's is swapped for one the fake has); anything the fake
    cannot read gets a 400, as a real upstream would answer it."""

    def serve(request: Request) -> Reply:
        try:
            if request.body:
                body = json.loads(request.body)
                if isinstance(body, dict) and "model" in body:
                    body["model"] = model
                    request = attrs.evolve(request, body=json.dumps(body).encode())
            return handler(request)
        except Exception:
            return openai_error(400, "the upstream could not read that")

    return serve


class StatusLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        fields = getattr(record, "fields", None)
        if record.getMessage() == "request" and isinstance(fields, dict):
            self.statuses[fields["status"]] += 1
            if fields["status"] >= 500:
                self.failures.append(json.dumps(fields))
        elif record.levelno >= logging.ERROR:
            self.failures.append(self.format(record))


async def main(st: str, seconds: int) -> int:
    logs.configure("WARNING", "text")
    logging.getLogger().handlers[0].setLevel(logging.WARNING)  # request lines: counted, not shown
    status_log = StatusLog()
    status_log.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(status_log)
    logging.getLogger("mana_llm.request").setLevel(logging.INFO)
    async with trio.open_nursery() as nursery:
        ollama = FakeServer(lenient(FakeOllama(), "gemma3:4b"))
        cloud = FakeServer(lenient(FakeOpenAI(key=UPSTREAM_KEY), "llama-3.1-8b-instant"))
        await nursery.start(ollama.serve)
        await nursery.start(cloud.serve)
        env = stack_env(ollama, cloud, IMAGE_FETCH_TIMEOUT="1", STREAM_IDLE_TIMEOUT="5")
        stop = trio.Event()
        run = partial(
            service.run,
            Settings.from_env(env),
            registry=CollectorRegistry(),
            shutdown=stop,
            handle_signals=False,
        )
        binds: list[str] = await nursery.start(run)
        command = [
            st,
            "run",
            str(ROOT / "fuzz" / "openai-trimmed.json"),
            "--url",
            binds[0] + "/v1",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance,ignored_auth,response_headers_conformance",
            "--max-time",
            str(seconds),
            "--workers",
            "2",
            "--request-timeout",
            "30",
            "--continue-on-failure",
            "--suppress-health-check",
            "all",
        ]
        print("+", " ".join(command), flush=True)
        result = await trio.run_process(command, check=False)
        stop.set()
        nursery.cancel_scope.cancel()  # the fakes serve forever
    print("\n5xx answers and errors the gateway logged:")
    for line in status_log.failures or ["(none)"]:
        print(" ", line)
    print("statuses:", dict(sorted(status_log.statuses.items())))
    print(f"requests: {sum(status_log.statuses.values())}")
    return int(result.returncode)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schemathesis", default="st", help="the `st` command")
    parser.add_argument("--seconds", type=int, default=300, help="the run's time budget")
    args = parser.parse_args()
    sys.exit(trio.run(main, args.schemathesis, args.seconds))
