"""The import directions of DESIGN.md section 3, checked over the AST of mana_llm/**."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2] / "mana_llm"
LEAVES = {
    "mana_llm.errors",
    "mana_llm.domain",
    "mana_llm.settings",
    "mana_llm.codec",
    "mana_llm.logs",
    "mana_llm.lifecycle",
    "mana_llm.breaker",
    "mana_llm.env_reader",
}

# layer -> internal modules (prefixes) it may import
ALLOWED: dict[str, set[str]] = {
    "mana_llm.errors": set(),
    "mana_llm.domain": {"mana_llm.errors"},
    "mana_llm.settings": {"mana_llm.env_reader"},
    "mana_llm.env_reader": set(),
    "mana_llm.codec": set(),
    "mana_llm.logs": set(),
    "mana_llm.lifecycle": set(),
    "mana_llm.breaker": set(),
    "mana_llm.providers": LEAVES | {"mana_llm.providers"},
    "mana_llm.cache": LEAVES | {"mana_llm.cache"},
    "mana_llm.routing": LEAVES | {"mana_llm.routing", "mana_llm.providers.protocol"},
    "mana_llm.metrics": LEAVES,
    "mana_llm.gateway": LEAVES
    | {
        "mana_llm.metrics",
        "mana_llm.routing",
        "mana_llm.providers.protocol",
        "mana_llm.cache.store",
        "mana_llm.cache.keys",
        "mana_llm.cache.entries",
        "mana_llm.read_through",
    },
    # the gateway's cache steps: the gateway's view, never a backend
    "mana_llm.read_through": LEAVES
    | {
        "mana_llm.metrics",
        "mana_llm.routing.commit",
        "mana_llm.cache.store",
        "mana_llm.cache.entries",
    },
    "mana_llm.api": LEAVES | {"mana_llm.gateway", "mana_llm.metrics", "mana_llm.api"},
    "mana_llm.signals": set(),
    "mana_llm.server_config": LEAVES,
}
# third-party packages and the only layers that may import them
THIRD_PARTY = {
    "httpx": ("mana_llm.providers", "mana_llm.service"),
    "quart": ("mana_llm.api",),
    "quart_trio": ("mana_llm.api",),
    "werkzeug": ("mana_llm.api",),
    "hypercorn": ("mana_llm.service", "mana_llm.server_config"),
    "yaml": ("mana_llm.routing.aliases", "mana_llm.settings"),
    "coredis": ("mana_llm.cache.redis",),
    "orjson": ("mana_llm.codec",),
    "prometheus_client": ("mana_llm.metrics", "mana_llm.api", "mana_llm.service"),
}


def modules() -> list[tuple[str, list[str]]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        imports: list[str] = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imports += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imports.append(node.module)
                imports += [
                    f"{node.module}.{a.name}" for a in node.names if node.module == "mana_llm"
                ]
        out.append((name, imports))
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


@pytest.mark.parametrize(
    ("module", "imports"), modules(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_import_directions(module: str, imports: list[str]) -> None:
    layer = layer_of(module)
    for imported in imports:
        top = imported.split(".")[0]
        if top == "mana_llm" and layer is not None and imported != "mana_llm":
            allowed = ALLOWED[layer]
            assert any(imported == a or imported.startswith(a + ".") for a in allowed), (
                f"{module} imports {imported}"
            )
        if top in THIRD_PARTY:
            homes = THIRD_PARTY[top]
            assert any(module == h or module.startswith(h + ".") for h in homes), (
                f"{module} imports {top}"
            )


def test_the_rule_sees_violations() -> None:
    assert layer_of("mana_llm.api.app") == "mana_llm.api"
    assert not any(i.startswith("mana_llm.providers") for i in ALLOWED["mana_llm.api"])
