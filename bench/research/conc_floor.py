"""Non-streaming CPU per request at low and high concurrency, the gateway beside its floor:
the same requests through mana-llm and through `floor_relays.py json` (hypercorn + a raw ASGI
app + the gateway's own connection pool, the whole answer relayed with `model` rewritten,
nothing else), measured in turn within each rep, the relays pinned to one CPU and the load
and the fake upstream to the others.

    python bench/research/conc_floor.py [--reps 5] [--seconds 3] [--conc 1,64]

Prints the median CPU per request of each at each concurrency and how much more a request
costs at the highest than at the lowest. When the floor grows as much as the gateway, the
growth is the stack's (trio's scheduler, the sockets, hypercorn's per-connection work), not
the gateway's. Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # floor.py, beside it

from floor import measured, start_stack, stop_stack

TARGETS = ("gateway", "floor")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--conc", default="1,64")
    args = parser.parse_args()
    levels = [int(c) for c in args.conc.split(",")]
    procs, ports = start_stack({"floor": "json"})
    body = json.dumps({"model": "groq/bench", "messages": [{"role": "user", "content": "hi"}]})
    try:
        seen: dict[tuple[str, int], list[float]] = {(t, c): [] for t in TARGETS for c in levels}
        for rep in range(args.reps):
            for conc in levels:
                for target in TARGETS if rep % 2 == 0 else TARGETS[::-1]:
                    pid = procs[target].pid
                    result = measured(ports[target], pid, body.encode(), conc, args.seconds)
                    seen[target, conc].append(result["cpu_ms"])
        print("ms CPU per request, median of", args.reps, "interleaved reps")
        print(f"{'':8} " + " ".join(f"{'c=' + str(c):>8}" for c in levels) + "  highest/lowest")
        for target in TARGETS:
            got = [statistics.median(seen[target, c]) for c in levels]
            print(
                f"{target:8} " + " ".join(f"{g:8.3f}" for g in got) + f"  {got[-1] / got[0]:8.2f}"
            )
    finally:
        stop_stack(procs)


if __name__ == "__main__":
    main()
