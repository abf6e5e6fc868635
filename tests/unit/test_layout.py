"""The import directions of docs/ARCHITECTURE.md, checked over the AST of mana_llm/**."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2] / "mana_llm"
LEAVES = {
    "mana_llm.errors",
    "mana_llm.domain",
    "mana_llm.settings",
    "mana_llm.provider_settings",
    "mana_llm.codec",
    "mana_llm.logs",
    "mana_llm.lifecycle",
    "mana_llm.readiness",
    "mana_llm.env_reader",
    "mana_llm.settings_groups",
}

# layer -> internal modules (prefixes) it may import
ALLOWED: dict[str, set[str]] = {
    "mana_llm.errors": set(),
    "mana_llm.domain": {"mana_llm.errors"},
    "mana_llm.settings": {
        "mana_llm.env_reader",
        "mana_llm.settings_groups",
        "mana_llm.provider_settings",
    },
    "mana_llm.provider_settings": {"mana_llm.env_reader"},
    "mana_llm.settings_groups": {"mana_llm.env_reader"},
    "mana_llm.env_reader": set(),
    "mana_llm.codec": set(),
    "mana_llm.logs": set(),
    "mana_llm.lifecycle": set(),
    "mana_llm.readiness": set(),
    # the breaker and provider health: below routing and the cache, which both keep breakers
    "mana_llm.health": LEAVES | {"mana_llm.health"},
    "mana_llm.providers": LEAVES | {"mana_llm.providers"},
    "mana_llm.cache": LEAVES | {"mana_llm.cache", "mana_llm.health.breaker"},
    "mana_llm.routing": LEAVES
    | {"mana_llm.routing", "mana_llm.providers.protocol", "mana_llm.health"},
    "mana_llm.metrics": LEAVES | {"mana_llm.metric_declarations"},
    "mana_llm.metric_declarations": set(),
    # one way: the gateway returns what it did and never sees the api's metrics
    "mana_llm.gateway": LEAVES
    | {
        "mana_llm.routing",
        "mana_llm.health",
        "mana_llm.providers.protocol",
        "mana_llm.cache.store",
        "mana_llm.cache.keys",
        "mana_llm.cache.entries",
        "mana_llm.cache.read_through",
        "mana_llm.live_answer",
    },
    # the winner of a streamed walk: its end's two explicit calls (health, the cache)
    "mana_llm.live_answer": LEAVES
    | {"mana_llm.routing.commit", "mana_llm.routing.fallback", "mana_llm.cache.read_through"},
    "mana_llm.api": LEAVES
    | {"mana_llm.gateway", "mana_llm.metrics", "mana_llm.api", "mana_llm.access"},
    # who calls: keys, limits, prices, the ledger; below the api, beside the gateway
    "mana_llm.access": LEAVES | {"mana_llm.access"},
    # traces: observes the request (metrics.RequestTrace) and the walk's tries (routing), and
    # wraps the providers' transports; nothing below imports it
    "mana_llm.telemetry": LEAVES
    | {
        "mana_llm.telemetry",
        "mana_llm.metrics",
        "mana_llm.routing",
        "mana_llm.providers.upstream",
        "mana_llm.providers.pool",
    },
    "mana_llm.signals": set(),
    "mana_llm.server_config": LEAVES,
    # the other composition root: it checks what service.run would refuse before any worker
    "mana_llm.supervisor": LEAVES
    | {"mana_llm.server_config", "mana_llm.service", "mana_llm.access.assemble"},
}
# third-party packages and the only layers that may import them
THIRD_PARTY = {
    "httpx": (
        "mana_llm.providers",
        "mana_llm.service",
        "mana_llm.assembly",
        "mana_llm.telemetry.http",
    ),
    "opentelemetry": ("mana_llm.telemetry",),
    "quart": ("mana_llm.api",),
    "quart_trio": ("mana_llm.api",),
    "werkzeug": ("mana_llm.api",),
    "hypercorn": ("mana_llm.service", "mana_llm.server_config"),
    "yaml": (
        "mana_llm.routing.aliases",
        "mana_llm.settings",
        "mana_llm.provider_settings",
        "mana_llm.access.keys",
        "mana_llm.access.prices",
    ),
    "coredis": ("mana_llm.cache.redis", "mana_llm.access.redis_limits"),
    "orjson": ("mana_llm.codec",),
    "prometheus_client": (
        "mana_llm.metrics",
        "mana_llm.metric_declarations",
        "mana_llm.api",
        "mana_llm.service",
        "mana_llm.supervisor",
    ),
}


def imports_of(source: str) -> list[str]:
    imports: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imports += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imports.append(node.module)
            imports += [f"{node.module}.{a.name}" for a in node.names if node.module == "mana_llm"]
    return imports


def modules() -> list[tuple[str, list[str]]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, imports_of(path.read_text())))
    return out


def layer_of(module: str) -> str | None:
    return next(
        (
            layer
            for layer in sorted(ALLOWED, key=len, reverse=True)
            if module == layer or module.startswith(layer + ".")
        ),
        None,
    )


def violations(module: str, imports: list[str]) -> list[str]:
    """Every import of `module` that breaks the directions above."""
    found: list[str] = []
    layer = layer_of(module)
    for imported in imports:
        top = imported.split(".")[0]
        if top == "mana_llm" and layer is not None and imported != "mana_llm":
            allowed = ALLOWED[layer]
            if not any(imported == a or imported.startswith(a + ".") for a in allowed):
                found.append(f"{module} imports {imported}")
        if top in THIRD_PARTY:
            homes = THIRD_PARTY[top]
            if not any(module == h or module.startswith(h + ".") for h in homes):
                found.append(f"{module} imports {top}")
    return found


@pytest.mark.parametrize(
    ("module", "imports"), modules(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_import_directions(module: str, imports: list[str]) -> None:
    assert violations(module, imports) == []


def test_every_module_has_a_layer() -> None:
    assert [name for name, _ in modules() if layer_of(name) is None] == [
        "mana_llm",
        "mana_llm.__main__",
        "mana_llm.assembly",
        "mana_llm.service",
    ]  # the package, the CLI and the composition root (service, assembly) import anything


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        (
            "mana_llm.api.chat",
            "from mana_llm.providers import ollama",
            "imports mana_llm.providers",
        ),
        ("mana_llm.api.chat", "import mana_llm.routing.health", "imports mana_llm.routing"),
        ("mana_llm.api.chat", "import httpx", "imports httpx"),
        ("mana_llm.gateway", "from mana_llm.api import wire", "imports mana_llm.api"),
        ("mana_llm.gateway", "from mana_llm.metrics import Metrics", "imports mana_llm.metrics"),
        ("mana_llm.domain", "from mana_llm import gateway", "imports mana_llm.gateway"),
        ("mana_llm.cache.store", "from mana_llm.routing import health", "imports mana_llm.routing"),
        ("mana_llm.providers.ollama", "import quart", "imports quart"),
        ("mana_llm.routing.fallback", "import yaml", "imports yaml"),
    ],
)
def test_a_real_violation_is_caught(module: str, source: str, expected: str) -> None:
    """The checker, fed the AST of a bad import, reports it."""
    assert [v for v in violations(module, imports_of(source)) if expected in v]
