"""What every benchmark shares: side-by-side timing, medians, tables, results files.

A benchmark module defines ``NAME`` (its name on the command line) and
``run(bench: Bench) -> dict[str, float]`` returning its named figures. It
measures comparisons side by side in one run (A, B, A, B, ...) with
:func:`interleaved`, and prints a table with :meth:`Bench.table`.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine, make_url

from tasktoolkit import orm

RESULTS = Path(__file__).parent / "results"


@dataclass
class Bench:
    """The run's settings, handed to each benchmark."""

    db_url: str
    quick: bool
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        """``sqlite``, ``postgresql`` or ``mariadb``."""
        name = make_url(self.db_url).get_backend_name()
        return "mariadb" if name in ("mysql", "mariadb") else name

    def table(self, title: str, rows: Sequence[Sequence[object]], header: Sequence[str]) -> None:
        """Print a plain-text table."""
        cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
        print(f"\n## {title} [{self.backend}]")
        for n, row in enumerate(cells):
            print(
                "  ".join(
                    c.rjust(w) if i else c.ljust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
            if n == 0:
                print("  ".join("-" * w for w in widths))


def seeded_uuid(rng: random.Random) -> str:
    """A version 4 UUID drawn from ``rng``: a seeded fill writes the same rows each run."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def task_identity(rng: random.Random, resource_type: str, resource_id: str) -> dict[str, Any]:
    """The first columns of a filled task row: its ids and its resource (whose foreign key
    column is ``<resource_type>_id``)."""
    return {
        "id": seeded_uuid(rng),
        "request_id": f"req-{seeded_uuid(rng)}",
        "resource_type": resource_type,
        "resource_id": resource_id,
        f"{resource_type}_id": resource_id,
    }


def fresh_engine(bench: Bench) -> Engine:
    """An engine on ``bench.db_url`` (through ``orm.prepare_engine``) on empty tables: the
    toolkit's tables and the imported host models' tables dropped and created again."""
    engine = orm.prepare_engine(create_engine(bench.db_url))
    orm.drop_all(engine)
    orm.create_all(engine)
    return engine


@contextmanager
def sibling(url: URL, suffix: str) -> Iterator[URL]:
    """A second database beside ``url`` (a file beside it on SQLite), dropped afterwards."""
    if url.get_backend_name() == "sqlite":
        yield url.set(database=f"{url.database}{suffix}")
        return
    name = f"{url.database}{suffix}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    quote = '"' if url.get_backend_name() == "postgresql" else "`"
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {quote}{name}{quote}"))
        conn.execute(text(f"CREATE DATABASE {quote}{name}{quote}"))
    try:
        yield url.set(database=name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {quote}{name}{quote}"))
        admin.dispose()


def analyze(engine: Engine) -> None:
    """Bring the planner's statistics of the toolkit's tables up to date."""
    with engine.begin() as conn:
        for table in ("tasktoolkit_tasks", "tasktoolkit_operations"):
            if engine.dialect.name == "postgresql":
                conn.execute(text(f"ANALYZE {table}"))
            elif engine.dialect.name in ("mysql", "mariadb"):
                conn.execute(text(f"ANALYZE TABLE {table}"))
            else:
                conn.execute(text("ANALYZE"))


def drain(result: Iterable[bytes]) -> None:
    """Finish a WSGI response as a server does: iterate the body, then close it."""
    for _ in result:
        pass
    close = getattr(result, "close", None)
    if close is not None:
        close()


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def interleaved(
    candidates: Mapping[str, Callable[[], object]], *, rounds: int, per_round: int = 1
) -> dict[str, float]:
    """Median seconds per call of each candidate, timed in turns (A, B, A, B, ...).

    Each round times ``per_round`` calls of every candidate, in a rotating order,
    so that drift in the machine's speed touches all of them alike.
    """
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            fn = candidates[name]
            start = time.perf_counter()
            for _ in range(per_round):
                fn()
            samples[name].append((time.perf_counter() - start) / per_round)
    return {name: statistics.median(values) for name, values in samples.items()}


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank, at or below): 0.99 for the p99."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def load_average() -> float:
    """The machine's load average over the last minute: the context of a figure on a shared
    machine."""
    return os.getloadavg()[0]


def save(backend: str, figures: dict[str, float]) -> Path:
    """Merge ``figures`` into ``benchmarks/results/<backend>.json``."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{backend}.json"
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing.update({k: round(v, 6) if isinstance(v, float) else v for k, v in figures.items()})
    path.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    return path
