"""Derive fuzz/openai-trimmed.json from the OpenAI OpenAPI spec (run by hand):

    python fuzz/derive_spec.py <path to the OpenAI openapi.yaml>

Keeps the operations mana-llm serves (POST /chat/completions, POST /responses,
POST /embeddings, GET /models, GET /models/{model}) and every component they reference,
with the server set to `/v1` so schemathesis can be pointed at any gateway. The result is
self-contained.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import yaml

OPERATIONS = {
    "/chat/completions": ["post"],
    "/embeddings": ["post"],
    "/responses": ["post"],
    "/models": ["get"],
    "/models/{model}": ["get"],
}


def refs(node: Any) -> set[str]:
    if isinstance(node, list):
        return set().union(*(refs(n) for n in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
    return found.union(*(refs(v) for v in node.values()))


def main(spec_path: str) -> None:
    spec = yaml.safe_load(pathlib.Path(spec_path).read_text())
    paths = {
        path: {method: spec["paths"][path][method] for method in methods}
        for path, methods in OPERATIONS.items()
    }
    keep: set[str] = set()
    todo = list(refs(paths))
    while todo:
        ref = todo.pop()
        if ref in keep:
            continue
        keep.add(ref)
        _, _, kind, name = ref.split("/", 3)
        todo.extend(refs(spec["components"][kind][name]) - keep)
    components: dict[str, dict[str, Any]] = {}
    for ref in sorted(keep):
        _, _, kind, name = ref.split("/", 3)
        components.setdefault(kind, {})[name] = spec["components"][kind][name]
    components["securitySchemes"] = spec["components"]["securitySchemes"]
    out = {
        "openapi": spec["openapi"],
        "info": {"title": "OpenAI operations served by mana-llm", "version": "trimmed"},
        "servers": [{"url": "/v1"}],
        "security": spec.get("security", []),
        "paths": paths,
        "components": components,
    }
    target = pathlib.Path(__file__).with_name("openai-trimmed.json")
    target.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"{len(keep)} components -> {target}")


if __name__ == "__main__":
    main(sys.argv[1])
