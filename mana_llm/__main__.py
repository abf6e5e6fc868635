"""`python -m mana_llm` / `mana-llm`: read the environment once, then serve."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
from functools import partial

import attrs
import trio
from dotenv import dotenv_values

from mana_llm import logs, service, supervisor
from mana_llm.access import report
from mana_llm.server_config import toml_workers
from mana_llm.settings import Settings, SettingsError, StartupError

log = logging.getLogger("mana_llm")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mana-llm",
        description="OpenAI-compatible LLM gateway for Ollama and OpenAI-compatible clouds. "
        "Settings come from the environment (see README.md). "
        "`mana-llm usage --help`: the usage ledger as a table.",
    )
    parser.add_argument("--host", help="address to listen on (default: $HOST or 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (default: $PORT or 3025)")
    parser.add_argument(
        "--config", metavar="HYPERCORN_TOML", help="hypercorn settings file, e.g. hypercorn.toml"
    )
    parser.add_argument(
        "--workers", help="processes serving the port: a number or auto (default: $WORKERS or 1)"
    )
    parser.add_argument(
        "--env-file",
        metavar="PATH",
        help="settings file read before the environment, which wins (default: ./.env if present)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    return parser.parse_args(argv)


def version() -> str:
    """The installed distribution's version (pyproject.toml is its one source)."""
    try:
        return importlib.metadata.version("mana-llm")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown (not installed)"


def environment(env_file: str | None) -> tuple[dict[str, str], str | None]:
    """The process environment over the env file's values, and the file read, if any."""
    env = dict(os.environ)
    path = env_file or ".env"
    if env_file is None and not os.path.isfile(path):
        return env, None
    if not os.path.isfile(path):
        raise SettingsError(f"--env-file {path!r} does not exist")
    for key, value in dotenv_values(path).items():
        if value is not None:
            env.setdefault(key, value)  # variables already in the environment win
    return env, path


def workers(args: argparse.Namespace, env: dict[str, str], settings: Settings) -> int:
    """--workers, else WORKERS, else `workers` in hypercorn.toml, else 1."""
    if args.workers:
        return Settings.from_env({"WORKERS": args.workers}).workers
    if "WORKERS" not in env and args.config:
        return toml_workers(args.config) or 1
    return settings.workers


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["usage"]:  # python -m mana_llm usage: the ledger as a table
        return report.main(given[1:], dict(os.environ))
    args = parse_args(given)
    try:
        env, env_file = environment(args.env_file)
        settings = Settings.from_env(env)
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
    try:
        settings = attrs.evolve(settings, workers=workers(args, env, settings))
        logs.configure(settings.log_level, settings.log_format, settings.worker)
        if env_file is not None and settings.worker is None:
            log.info("settings from %s (the environment wins over it)", env_file)
        if settings.workers > 1 and settings.worker is None:
            passed = ["--config", args.config] if args.config else []
            passed += ["--env-file", env_file] if env_file else []
            trio.run(supervisor.run, settings, passed, env, args.config)
        else:
            if settings.metrics_dir is not None:  # one process writing multiprocess metrics
                os.makedirs(settings.metrics_dir, exist_ok=True)
            reread = partial(Settings.from_env, env)  # SIGHUP: the providers file again
            trio.run(partial(service.run, settings, config_path=args.config, reread=reread))
    except (StartupError, SettingsError) as error:
        print(f"mana-llm: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
