"""`python -m mana_llm usage`: the ledger as a table (several files merge: one per host).

python -m mana_llm usage [--db FILE ...] [--since 7d] [--by caller,model] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

from mana_llm.access.ledger import GROUPS, LedgerError, summarize

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
COLUMNS = ("requests", "prompt_tokens", "completion_tokens", "cost_usd", "errors", "estimated")


def since(text: str, now: float) -> float:
    """`7d`, `12h`, `30m`, `all`: the start of the span, in epoch seconds."""
    if text == "all":
        return 0.0
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text.strip())
    if found is None:
        raise argparse.ArgumentTypeError(f"--since {text!r}: a number and s, m, h, d or w (7d)")
    return now - float(found.group(1)) * UNITS[found.group(2)]


def groups(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [g for g in chosen if g not in GROUPS]
    if unknown:
        raise argparse.ArgumentTypeError(f"--by {unknown[0]!r}: one or more of {', '.join(GROUPS)}")
    return chosen


def table(rows: list[dict[str, Any]], by: Sequence[str]) -> str:
    head = [*by, *COLUMNS]
    cells = [[_cell(row.get(name)) for name in head] for row in rows]
    if len(rows) != 1 or not by:  # a total line, under the groups' first column
        label = ["total"] + [""] * (len(by) - 1) if by else []
        cells.append(label + [_cell(sum(row[c] for row in rows)) for c in COLUMNS])
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") or "0"
    return str(value)


def main(argv: list[str], env: dict[str, str], now: float | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mana-llm usage", description="Requests, tokens, cost and errors from the ledger."
    )
    parser.add_argument(
        "--db",
        action="append",
        metavar="FILE",
        help="a ledger file; repeat to merge hosts (default: $USAGE_DB or ./mana-llm-usage.sqlite)",
    )
    parser.add_argument("--since", default="7d", help="how far back: 30m, 12h, 7d, 4w, all")
    parser.add_argument(
        "--by",
        type=groups,
        default=["caller", "model"],
        help=f"grouped by: {', '.join(GROUPS)} (comma-separated)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per group")
    args = parser.parse_args(argv)
    try:
        start = since(args.since, time.time() if now is None else now)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    paths = args.db or [env.get("USAGE_DB", "").strip() or "./mana-llm-usage.sqlite"]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        print(f"mana-llm usage: no ledger at {missing[0]!r}", file=sys.stderr)
        return 2
    try:
        rows = summarize(paths, start, args.by)
    except LedgerError as exc:
        print(f"mana-llm usage: {exc}", file=sys.stderr)
        return 2
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(table(rows, args.by))
    return 0
