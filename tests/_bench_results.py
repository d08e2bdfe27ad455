"""Shared by the tests that check a committed benchmark result and the README that quotes it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a module (the scripts are not a package)."""
    path = REPO / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def latest_result(pattern: str) -> Path:
    """The newest ``benchmarks/results/<pattern>`` (dated names sort by date)."""
    runs = sorted(RESULTS.glob(pattern))
    assert runs, f"no benchmarks/results/{pattern}: run its benchmark and commit the result"
    return runs[-1]
