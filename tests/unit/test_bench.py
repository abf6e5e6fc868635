"""bench/ does not rot: `run.py` (the benchmark users run), its support modules and every
research script in bench/research/ import against the code as it is now, and each script
answers --help (its arguments parse). They print figures and never gate CI; this only checks
that they still start."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys
from types import ModuleType

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = [
    "balance.py",
    "callers.py",
    "run.py",
    "traces.py",
    *(f"research/{p.name}" for p in sorted((BENCH / "research").glob("*.py"))),
]


def load(relative: str) -> ModuleType:
    path = BENCH / relative
    spec = importlib.util.spec_from_file_location(f"bench_smoke_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_research_scripts_are_the_ones_the_readme_names() -> None:
    readme = (BENCH / "README.md").read_text()
    assert SCRIPTS[4:] == [
        "research/app_cost.py",
        "research/callers_instructions.py",
        "research/conc_floor.py",
        "research/floor.py",
        "research/instructions.py",
        "research/path.py",
        "research/traces_instructions.py",
        "research/workers_floor.py",
    ]
    for script in SCRIPTS:
        assert f"bench/{script}" in readme, script


@pytest.mark.parametrize(
    "script", ["fake_upstream.py", "floor_relays.py", "sink_gateway.py", *SCRIPTS]
)
def test_every_bench_module_imports(script: str) -> None:
    module = load(script)
    if script in SCRIPTS:
        assert callable(module.main)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_parses_its_arguments(script: str) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")
