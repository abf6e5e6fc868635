"""`python -m mana_llm` / `mana-llm`: read the environment once, then serve."""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial

import attrs
import trio

from mana_llm import logs, service
from mana_llm.settings import Settings, SettingsError, StartupError


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mana-llm",
        description="OpenAI-compatible LLM gateway for Ollama and OpenAI-compatible clouds. "
        "Settings come from the environment (see README.md).",
    )
    parser.add_argument("--host", help="address to listen on (default: $HOST or 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (default: $PORT or 3025)")
    parser.add_argument(
        "--config", metavar="HYPERCORN_TOML", help="hypercorn settings file, e.g. hypercorn.toml"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as error:
        print(f"mana-llm: {error}", file=sys.stderr)
        return 2
    if args.host:
        settings = attrs.evolve(settings, host=args.host)
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            print(f"mana-llm: --port {args.port} must be between 0 and 65535", file=sys.stderr)
            return 2
        settings = attrs.evolve(settings, port=args.port)
    if args.config and not os.path.isfile(args.config):
        print(f"mana-llm: --config {args.config!r} does not exist", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        trio.run(partial(service.run, settings, config_path=args.config))
    except StartupError as error:
        print(f"mana-llm: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
