"""Hypercorn's configuration for the gateway: hypercorn.toml read strictly (every key checked,
the ones the gateway sets itself refused with the setting to use instead), the listening
socket's options, and a bind failure as one start-up line."""

from __future__ import annotations

import difflib
import logging
import socket
import tomllib
from typing import Any, cast

from hypercorn.config import Config, Sockets

from mana_llm.settings import Settings, StartupError

# A client that stops reading must not pin a stream forever (hypercorn shields its sends).
CLIENT_SEND_TIMEOUT_MS = 30_000


class _Config(Config):
    reuse_port = False  # a worker under the supervisor: one SO_REUSEPORT socket of several

    def create_sockets(self) -> Sockets:
        try:
            if self.reuse_port:
                sockets = Sockets([], [reuse_port_socket(self.bind[0])], [])
            else:
                sockets = super().create_sockets()
        except OSError as exc:  # e.g. the port is taken: one line, exit 2
            raise StartupError(
                f"cannot listen on {', '.join(self.bind)}: {exc.strerror or exc}"
            ) from None
        for sock in sockets.insecure_sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and hasattr(
                socket, "TCP_USER_TIMEOUT"
            ):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, CLIENT_SEND_TIMEOUT_MS)
        return sockets


CUT_GRACE_S = 2.0  # between the gateway's drain deadline and hypercorn's

_LOGGING = "LOG_LEVEL and LOG_FORMAT (the gateway logs one line per request itself)"
# hypercorn.toml keys the gateway sets itself, with the setting to use instead
GATEWAY_OWNED = {
    "bind": "HOST and PORT (or --host/--port)",
    "insecure_bind": "HOST and PORT (or --host/--port)",
    "quic_bind": "HOST and PORT (or --host/--port)",
    "graceful_timeout": "GRACEFUL_TIMEOUT",
    "accesslog": _LOGGING,
    "access_log_format": _LOGGING,
    "errorlog": _LOGGING,
    "loglevel": _LOGGING,
    "logconfig": _LOGGING,
    "logconfig_dict": _LOGGING,
    "logger_class": _LOGGING,
    "max_requests": "nothing: it would stop the gateway after that many requests",
    "max_requests_jitter": "nothing: it would stop the gateway after that many requests",
}
# keys only the hypercorn command line reads; mana-llm runs its own process
CLI_ONLY = frozenset(
    {"application_path", "daemon", "group", "pid_path", "umask", "use_reloader", "user"}
    | {"worker_class", "debug"}
)


def read_hypercorn_toml(path: str) -> dict[str, Any]:
    """The file's settings, each checked: unknown keys (a typo such as `keep_alive_timout`),
    keys the gateway sets itself and values of the wrong type stop start-up by name."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise StartupError(f"--config {path}: cannot read it ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise StartupError(f"--config {path}: not valid TOML ({exc})") from None
    known = sorted(
        name
        for name in dir(Config)
        if not name.startswith("_") and not callable(getattr(Config, name, None))
    )
    for key, value in data.items():
        if key in GATEWAY_OWNED:
            instead = GATEWAY_OWNED[key]
            raise StartupError(f"--config {path}: {key} is set by the gateway; use {instead}")
        if key in CLI_ONLY:
            raise StartupError(
                f"--config {path}: {key} is read only by the hypercorn command line, "
                "which mana-llm does not use"
            )
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise StartupError(f"--config {path}: unknown key {key!r}{hint}")
        default = getattr(Config, key)
        if isinstance(default, bool | int | float | str) and not _same_kind(default, value):
            kind = (
                "true or false"
                if isinstance(default, bool)
                else "a string"
                if isinstance(default, str)
                else "a number"
            )
            raise StartupError(f"--config {path}: {key} must be {kind}, not {value!r}")
    return data


def _same_kind(default: object, value: object) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int | float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


def toml_workers(path: str) -> int | None:
    """`workers` in hypercorn.toml, if it says: a whole number from 1."""
    workers = read_hypercorn_toml(path).get("workers")
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 256:
        raise StartupError(f"--config {path}: workers must be a whole number from 1 to 256")
    return workers


def reuse_port_socket(bind: str) -> socket.socket:
    """A listening-ready TCP socket on `host:port` that other processes may bind too
    (SO_REUSEPORT): the kernel spreads new connections over all of them."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, int(port)))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def hypercorn_config(settings: Settings, config_path: str | None = None) -> Config:
    mapping = read_hypercorn_toml(config_path) if config_path else {}
    mapping.pop("workers", None)  # ours to run (supervisor.py), not hypercorn's
    config = cast(_Config, _Config.from_mapping(mapping))
    config.reuse_port = settings.worker is not None
    config.bind = [
        f"[{settings.host}]:{settings.port}"
        if ":" in settings.host
        else f"{settings.host}:{settings.port}"
    ]
    # the gateway cuts what is still open at GRACEFUL_TIMEOUT and tells each client why
    # (service._drain_after); hypercorn's own cut, silent, comes this much later
    config.graceful_timeout = settings.graceful_timeout_s + CUT_GRACE_S
    config.accesslog = None
    # hypercorn's own lines go through the root handler (text or JSON, like every other line)
    config.errorlog = logging.getLogger("hypercorn.error")
    return config
