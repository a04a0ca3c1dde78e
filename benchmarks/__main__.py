"""``python -m benchmarks [NAME ...] [--db-url URL] [--quick]``: run the benchmarks.

Each benchmark prints a table; all figures go to ``benchmarks/results/<backend>.json``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import benchmarks
from benchmarks._harness import Bench, save


def discover() -> dict[str, ModuleType]:
    """Every benchmark module (a module of this package with ``NAME`` and ``run``)."""
    found = {}
    for info in pkgutil.iter_modules(benchmarks.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"benchmarks.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            found[module.NAME] = module
    return dict(sorted(found.items()))


def main(argv: list[str] | None = None) -> int:
    available = discover()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"of {', '.join(available)}")
    parser.add_argument("--db-url", help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in available]
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(available)}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        bench = Bench(db_url=url, quick=args.quick)
        for name in args.names or list(available):
            figures = available[name].run(bench)
            bench.figures.update(figures)
        path = save(bench.backend, bench.figures)
    print(f"\nfigures written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
