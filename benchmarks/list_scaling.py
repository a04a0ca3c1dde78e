"""Listing tasks stays flat as the tasks table grows (10,000 -> 1,000,000 rows).

Times two requests through the whole WSGI stack (Router + Routes + the
mounted endpoints + the queries), as a member of one project:

- ``GET /ports/<id>/tasks?state=active``: one port's active tasks;
- ``GET /tasks?state=running&limit=50``: the project's running tasks;
- ``GET /tasks?limit=50&marker=<id>``: a page half way down the project's whole
  history (keyset pagination; an extra figure, ``marker_page_ratio_1m_vs_10k``);
- ``GET /operations?action=update&limit=50``, ``GET /operations?method=DELETE&limit=50``
  and ``GET /operations?resource_type=port&resource_id=<id>``: the operation
  filters, over an operations table as long as the tasks table.

The table is filled the way a real one grows: the work in progress (a fixed
set of pending and running tasks, bounded by the workers) stays the same
while the history of finished tasks grows, across many ports and ten
projects; a tenth of the finished rows are expired but not yet purged. The
port under test always has 20 tasks, 4 of them active. Rows go in with Core
bulk inserts; the statistics are refreshed (``ANALYZE``) after each fill, as
autovacuum / InnoDB would. The two sizes live in two databases (the one at
``--db-url`` and a sibling, ``<name>_list_small``, created and dropped here), so
both are timed side by side, interleaved; the figures are the median ratios
1M / 10k (bar: <= 1.5). With ``--quick``
the big size is 100,000 rows (the figures keep their names; the table says so).

The query plans of both requests at the big size are printed (``EXPLAIN``).

Warning: drops and re-creates the toolkit's and the sample's tables in the
database at ``--db-url``.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import routes
from sqlalchemy import create_engine, event, func, insert, or_, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import sessionmaker
from webob import Request

from benchmarks._harness import Bench, interleaved, seeded_uuid, task_identity
from sample_app.models import Network, Port
from tasktoolkit import Settings, orm
from tasktoolkit.endpoints import Router, mount
from tasktoolkit.orm._records import operations_table, tasks_table

NAME = "list_scaling"

PROJECTS = [f"project-{n}" for n in range(10)]
ME = PROJECTS[0]
PORTS_PER_PROJECT = 100
ACTIVE_PER_PROJECT = 100  # pending + running, fixed: bounded by the workers, not by history
TARGET_TASKS = 20
BATCH = 10_000
_NAMES = ("l2_wiring", "dhcp_provisioning", "anti_spoofing", "security_groups", "unbind")
_T0 = datetime(2026, 1, 1, tzinfo=UTC)
_OPERATION_LISTS = {
    "action": "GET /operations?action=update&limit=50",
    "method": "GET /operations?method=DELETE&limit=50",
    "resource": "GET /operations?resource_type=port&resource_id=<id>",
}


def _row(
    rng: random.Random,
    port_id: str,
    project: str,
    state: str,
    created: datetime,
    now: datetime,
) -> dict[str, Any]:
    finished = None if state in ("pending", "running") else created + timedelta(seconds=30)
    expires = None
    if finished is not None:
        # One finished row in ten has expired and waits for purge.
        expires = now - timedelta(hours=1) if rng.random() < 0.1 else now + timedelta(days=1)
    return {
        **task_identity(rng, "port", port_id),
        "name": rng.choice(_NAMES),
        "state": state,
        "progress": 100 if state == "succeeded" else None,
        "message": None,
        "error_code": "agent_down" if state == "failed" else None,
        "error_message": "the agent did not answer" if state == "failed" else None,
        "host": "worker-1" if state != "pending" else None,
        "project_id": project,
        "user_id": "bench",
        "cancel_requested": False,
        "attempts": 0 if state == "pending" else 1,
        "max_attempts": 1,
        "heartbeat_timeout": 300,
        "created_at": created,
        "started_at": None if state == "pending" else created,
        "updated_at": finished or created,
        "finished_at": finished,
        "expires_at": expires,
    }


_METHODS = (("POST", "create"), ("POST", "create"), ("PUT", "update"), ("DELETE", "delete"))


def _operation_row(
    rng: random.Random, port_id: str, project: str, created: datetime, now: datetime
) -> dict[str, Any]:
    method, action = rng.choice(_METHODS)
    finished = created + timedelta(seconds=30)
    expires = now - timedelta(hours=1) if rng.random() < 0.1 else now + timedelta(days=1)
    return {
        "id": f"req-{seeded_uuid(rng)}",
        "method": method,
        "path": f"/v2.0/ports/{port_id}",
        "action": action,
        "resource_type": "port",
        "resource_id": port_id,
        "project_id": project,
        "user_id": "bench",
        "state": "failed" if rng.random() < 0.05 else "succeeded",
        "http_status": 202,
        "ttl_seconds": 86400,
        "created_at": created,
        "updated_at": finished,
        "finished_at": finished,
        "expires_at": expires,
    }


class _Fill:
    """The database under test, filled step by step."""

    def __init__(self, engine: Engine, seed: int = 4) -> None:
        self.engine = engine
        self.rng = random.Random(seed)
        self.rows = 0
        self.now = datetime.now(UTC)
        self.ports: dict[str, list[str]] = {}
        self.target = ""

    def setup(self) -> None:
        orm.drop_all(self.engine)
        orm.create_all(self.engine)
        with self.engine.begin() as conn:
            for project in PROJECTS:
                network_id = str(uuid.uuid4())
                conn.execute(
                    insert(Network.__table__),
                    [{"id": network_id, "name": "net", "project_id": project, "created_at": _T0}],
                )
                ports = [str(uuid.uuid4()) for _ in range(PORTS_PER_PROJECT)]
                conn.execute(
                    insert(Port.__table__),
                    [
                        {
                            "id": p,
                            "network_id": network_id,
                            "name": "p",
                            "project_id": project,
                            "created_at": _T0,
                        }
                        for p in ports
                    ],
                )
                self.ports[project] = ports
            self.target = self.ports[ME][0]
            # The port under test: 16 finished tasks, then 4 active ones.
            rows = [
                _row(self.rng, self.target, ME, state, _T0 + timedelta(minutes=n), self.now)
                for n, state in enumerate(["succeeded"] * 16 + ["running"] * 2 + ["pending"] * 2)
            ]
            # The work in progress: fixed, whatever the history.
            for project in PROJECTS:
                for n in range(ACTIVE_PER_PROJECT):
                    port = self.rng.choice(self.ports[project][1:])
                    state = "running" if n % 2 else "pending"
                    rows.append(
                        _row(
                            self.rng,
                            port,
                            project,
                            state,
                            _T0 + timedelta(days=300, seconds=n),
                            self.now,
                        )
                    )
            conn.execute(insert(tasks_table), rows)
            # The port under test was created, updated three times and deleted.
            conn.execute(
                insert(operations_table),
                [
                    {
                        **_operation_row(
                            self.rng, self.target, ME, _T0 + timedelta(hours=n), self.now
                        ),
                        "method": method,
                        "action": action,
                        "expires_at": self.now + timedelta(days=1),
                    }
                    for n, (method, action) in enumerate(
                        [("POST", "create"), *[("PUT", "update")] * 3, ("DELETE", "delete")]
                    )
                ],
            )
        self.rows = len(rows)

    def grow(self, total: int) -> float:
        """Add finished tasks until the table has ``total`` rows; seconds taken."""
        start = time.perf_counter()
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "sqlite":
                # A benchmark's fill need not survive a power cut: skip the fsyncs.
                conn.exec_driver_sql("PRAGMA synchronous=OFF")
            while self.rows < total:
                count = min(BATCH, total - self.rows)
                rows, operations = [], []
                for _ in range(count):
                    project = self.rng.choice(PROJECTS)
                    port = self.rng.choice(self.ports[project][1:])
                    created = _T0 + timedelta(seconds=self.rng.randrange(300 * 86400))
                    state = "failed" if self.rng.random() < 0.05 else "succeeded"
                    rows.append(_row(self.rng, port, project, state, created, self.now))
                    operations.append(_operation_row(self.rng, port, project, created, self.now))
                conn.execute(insert(tasks_table), rows)
                conn.execute(insert(operations_table), operations)
                conn.commit()
                self.rows += count
            if self.engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA synchronous=FULL")
        self.analyze()
        return time.perf_counter() - start

    def analyze(self) -> None:
        with self.engine.begin() as conn:
            name = self.engine.dialect.name
            if name == "postgresql":
                conn.execute(text("ANALYZE tasktoolkit_tasks, tasktoolkit_operations"))
            elif name in ("mysql", "mariadb"):
                conn.execute(text("ANALYZE TABLE tasktoolkit_tasks, tasktoolkit_operations"))
            else:
                conn.execute(text("ANALYZE"))


def _middle_of_history(engine: Engine) -> str:
    """The id of a task half way down the project's default-ordered list (a deep marker)."""
    now = datetime.now(UTC)
    with sessionmaker(engine)() as session:
        page = orm.list_tasks(session, orm.ListParams(limit=1), scope=orm.Scope(project_id=ME))
        total = session.scalar(
            select(func.count()).select_from(tasks_table).where(tasks_table.c.project_id == ME)
        )
        ids = session.scalars(
            select(tasks_table.c.id)
            .where(
                tasks_table.c.project_id == ME,
                or_(tasks_table.c.expires_at.is_(None), tasks_table.c.expires_at > now),
            )
            .order_by(tasks_table.c.created_at.desc(), tasks_table.c.id.desc())
            .offset(int(total or 0) // 2)
            .limit(1)
        ).all()
    return ids[0] if ids else page.records[0].id


def _getter(app: Router, path: str) -> Callable[[], bytes]:
    """A GET of ``path`` through ``app``, as a member of :data:`ME`."""

    def call() -> bytes:
        request = Request.blank(path, headers={"X-Project-Id": ME, "X-User-Id": "bench"})
        response = request.get_response(app)
        if response.status_int != 200:
            raise RuntimeError(f"{path}: {response.status} {response.text[:300]}")
        return bytes(response.body)

    return call


@contextmanager
def _statements(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements run while the block runs."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _explain(engine: Engine, statement: str, parameters: Any) -> list[str]:
    name = engine.dialect.name
    prefix = {"postgresql": "EXPLAIN (ANALYZE, COSTS OFF) ", "sqlite": "EXPLAIN QUERY PLAN "}.get(
        name, "EXPLAIN "
    )
    with engine.connect() as conn:
        result = conn.exec_driver_sql(prefix + statement, parameters)
        lines = []
        for row in result:
            if name in ("mysql", "mariadb"):
                mapping = row._mapping
                lines.append(
                    f"table={mapping['table']} type={mapping['type']} key={mapping['key']} "
                    f"rows={mapping['rows']} extra={mapping['Extra']}"
                )
            else:
                lines.append(" | ".join(str(c) for c in row))
        return lines


@contextmanager
def _sibling_database(url: str) -> Iterator[str]:
    """A second, empty database beside ``url`` (a file beside it, on SQLite); dropped after."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "bench.db")
        sibling = path.with_name(path.stem + "_list_small" + path.suffix)
        sibling.unlink(missing_ok=True)
        try:
            yield parsed.set(database=str(sibling)).render_as_string(hide_password=False)
        finally:
            sibling.unlink(missing_ok=True)
        return
    name = f"{parsed.database}_list_small"
    quote = '"' if parsed.get_backend_name() == "postgresql" else "`"
    admin = create_engine(parsed, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {quote}{name}{quote}"))
        conn.execute(text(f"CREATE DATABASE {quote}{name}{quote}"))
    try:
        yield parsed.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {quote}{name}{quote}"))
        admin.dispose()


def _stack(engine: Engine) -> Router:
    mapper = routes.Mapper()
    mount(
        mapper,
        collections={"ports": Port, "networks": Network},
        session_factory=sessionmaker(engine),
        settings=Settings(),
    )
    return Router(mapper)


def run(bench: Bench) -> dict[str, float]:
    small, big = 10_000, (100_000 if bench.quick else 1_000_000)
    big_label = "100k (--quick)" if bench.quick else "1M"
    rounds = 40 if bench.quick else 100
    with _sibling_database(bench.db_url) as small_url:
        engines = {
            small: orm.prepare_engine(create_engine(small_url)),
            big: orm.prepare_engine(create_engine(bench.db_url)),
        }
        calls: dict[str, Callable[[], bytes]] = {}
        fill_seconds: dict[int, float] = {}
        for size, engine in engines.items():
            fill = _Fill(engine)
            fill.setup()
            fill_seconds[size] = fill.grow(size)
            app = _stack(engine)
            calls[f"child@{size}"] = _getter(app, f"/ports/{fill.target}/tasks?state=active")
            calls[f"running@{size}"] = _getter(app, "/tasks?state=running&limit=50")
            marker = _middle_of_history(engine)
            calls[f"page@{size}"] = _getter(app, f"/tasks?limit=50&marker={marker}")
            calls[f"action@{size}"] = _getter(app, "/operations?action=update&limit=50")
            calls[f"method@{size}"] = _getter(app, "/operations?method=DELETE&limit=50")
            calls[f"resource@{size}"] = _getter(
                app, f"/operations?resource_type=port&resource_id={fill.target}"
            )
        for name, call in calls.items():  # warm the caches and check the answers
            for _ in range(5):
                body = json.loads(call())
            key = "operations" if name.split("@")[0] in _OPERATION_LISTS else "tasks"
            short = name.startswith(("child", "resource"))
            assert len(body[key]) == {"child": 4, "resource": 5}.get(name.split("@")[0], 50), name
            assert body[f"{key}_links"] or short, name
        # Both sizes side by side (A, B, A, B, ...): drift touches them alike.
        medians = interleaved(calls, rounds=rounds)

        for size, engine in engines.items():
            with _statements(engine) as seen:
                for kind in ("child", "running", "page", *_OPERATION_LISTS):
                    calls[f"{kind}@{size}"]()
            print(f"\n## query plans at {size:,} rows [{bench.backend}]")
            for statement, parameters in seen:
                if statement.lstrip().upper().startswith("SELECT") and "ORDER BY" in statement:
                    print("    --")
                    for line in _explain(engine, statement, parameters):
                        print("   ", line)
        for engine in engines.values():
            engine.dispose()

    figures = {
        "child_list_ratio_1m_vs_10k": medians[f"child@{big}"] / medians[f"child@{small}"],
        "running_list_ratio_1m_vs_10k": medians[f"running@{big}"] / medians[f"running@{small}"],
        "marker_page_ratio_1m_vs_10k": medians[f"page@{big}"] / medians[f"page@{small}"],
    }
    for kind in _OPERATION_LISTS:
        figures[f"operations_{kind}_ratio_1m_vs_10k"] = (
            medians[f"{kind}@{big}"] / medians[f"{kind}@{small}"]
        )
    bench.table(
        f"list scaling: 10k vs {big_label} task rows, side by side, through the WSGI stack",
        [
            [
                "GET /ports/<id>/tasks?state=active",
                medians[f"child@{small}"] * 1e3,
                medians[f"child@{big}"] * 1e3,
                figures["child_list_ratio_1m_vs_10k"],
            ],
            [
                "GET /tasks?state=running&limit=50",
                medians[f"running@{small}"] * 1e3,
                medians[f"running@{big}"] * 1e3,
                figures["running_list_ratio_1m_vs_10k"],
            ],
            [
                "GET /tasks?limit=50&marker=<mid-history>",
                medians[f"page@{small}"] * 1e3,
                medians[f"page@{big}"] * 1e3,
                figures["marker_page_ratio_1m_vs_10k"],
            ],
            *(
                [
                    request,
                    medians[f"{kind}@{small}"] * 1e3,
                    medians[f"{kind}@{big}"] * 1e3,
                    figures[f"operations_{kind}_ratio_1m_vs_10k"],
                ]
                for kind, request in _OPERATION_LISTS.items()
            ),
            ["fill (s)", fill_seconds[small], fill_seconds[big], ""],
        ],
        ["request", "ms at 10k", f"ms at {big_label}", "ratio (<= 1.5)"],
    )
    return figures
