"""Log lines: readable text by default, one JSON object a line with LOG_FORMAT=json. Every line
logged while a request is handled carries its request id (a context variable that trio tasks
inherit). Prompts, completions and secrets are never logged."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_VALID_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def accept_request_id(given: str | None) -> str:
    """The caller's X-Request-Id when it is sane (bounded, plain characters), else a new one."""
    if given and _VALID_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


# The current span's (trace id, span id) as hex, or None: set by telemetry/ when traces are on.
span_ids: Callable[[], tuple[str, str] | None] | None = None


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        ids = span_ids() if span_ids is not None else None
        if ids is not None and not hasattr(record, "trace_id"):
            record.trace_id, record.span_id = ids
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            line["request_id"] = rid
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            line["trace_id"], line["span_id"] = trace_id, getattr(record, "span_id", None)
        worker = getattr(record, "worker", None)
        if worker is not None:
            line["worker"] = worker
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        rid = getattr(record, "request_id", None)
        if rid:
            text += f" request_id={rid}"
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            text += f" trace_id={trace_id} span_id={getattr(record, 'span_id', None)}"
        worker = getattr(record, "worker", None)
        if worker is not None:
            text += f" worker={worker}"
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            text += "".join(f" {k}={json.dumps(v, default=str)}" for k, v in fields.items())
        return text


class _DropRunningOn(logging.Filter):
    """hypercorn says "Running on ..." for each socket; the gateway says where it listens once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Running on ")


# Their DEBUG lines print request and response headers, upstream keys included.
HEADER_LOGGERS = ("httpx", "httpcore", "hpack")


class _WorkerFilter(logging.Filter):
    """Under a supervisor, every line says which worker wrote it."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


def configure(level: str, fmt: str, worker: int | None = None) -> None:
    """Every line, hypercorn's included, goes through one handler on stderr in one format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_RequestIdFilter())
    if worker is not None:
        handler.addFilter(_WorkerFilter(worker))
    handler.addFilter(_DropRunningOn())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in HEADER_LOGGERS:  # never below INFO, whatever LOG_LEVEL says
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
