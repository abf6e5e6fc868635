"""What traces cost, in instructions: the gateways of `bench/traces.py` (`off`; `on`, every
request sampled, exported to an in-process sink; `otlp`, the same through the OTLP/HTTP
exporter, its thread counted; with `--before REV`, the code of that revision), each under
valgrind's callgrind, the same non-streaming requests one at a time over one
connection, counted around the load only (`callers_instructions.py` does the same for keys).

    python bench/research/traces_instructions.py [--requests 60] [--reps 2] [--before REV]

Needs valgrind; two to three minutes. Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
sys.path.insert(0, BENCH)
sys.path.insert(0, HERE)

import callers  # noqa: E402
import callers_instructions  # noqa: E402
import traces  # noqa: E402
from run import free_ports  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--before", default=None, help="a git revision to measure too")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="mana-bench-instr-out-")
    per_request: dict[str, float] = {}
    with traces.sink() as traces_url, traces.worktree(args.before) as before:
        up_port = free_ports(1)[0]
        scratch = tempfile.mkdtemp(prefix="mana-bench-instr-")
        base = callers.base_env(up_port, scratch) | {"PYTHONHASHSEED": "0"}
        gateways = traces.environments(base, scratch, traces_url, before)
        for mode, (env, cwd, command) in gateways.items():
            runs, _ = callers_instructions.measure_env(
                mode, env, cwd, up_port, args.requests, args.reps, workdir, command[1:]
            )
            per_request[mode] = min(runs)  # the first rep runs colder
    shown = ", ".join(f"{mode} {n / 1e6:.3f}M" for mode, n in per_request.items())
    print(f"instructions per request: {shown}")
    off = per_request["off"]
    print(f"on/off {per_request['on'] / off:.3f}, otlp/off {per_request['otlp'] / off:.3f}", end="")
    if "before" in per_request:
        print(f", off/before {per_request['off'] / per_request['before']:.3f}", end="")
    print()


if __name__ == "__main__":
    main()
