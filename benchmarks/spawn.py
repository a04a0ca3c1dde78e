"""Spawning tasks through the public API costs at most 2x a raw Core insert of the same rows.

Side by side, interleaved: ``TaskResource.spawn_tasks`` (via
:func:`tasktoolkit.orm.spawn_tasks`) on N resources, committed, against one
SQLAlchemy Core ``insert(tasks_table)`` of the same N rows (the same columns
and values, built in the timed function too), committed. A third row shows
the API inside a request, where the operation's counts move as well (shown,
not judged).

Figures: ``spawn_ratio_vs_core``, the median API time / the median Core time
(bar: <= 2); ``spawn_ratio_vs_core_with_dependencies``, the same with a port's order
(DHCP and security groups after the wiring: ``after=...``; bar: <= 2).

Warning: drops and re-creates the toolkit's and the test models' tables at ``--db-url``.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from benchmarks._harness import Bench, fresh_engine, interleaved
from tasktoolkit import orm
from tasktoolkit.context import RequestContext, new_request_id, request_context
from tasktoolkit.orm._operations import OperationFields, open_operation
from tasktoolkit.orm._records import tasks_table
from tasktoolkit.orm._rules import DEFAULT_RULES
from tasktoolkit.orm._types import utcnow
from tests.models import Cluster

NAME = "spawn"
_NAMES = ("l2_wiring", "dhcp_provisioning", "anti_spoofing", "security_groups")
_AFTER = {"dhcp_provisioning": ["l2_wiring"], "security_groups": ["l2_wiring"]}


def _clusters(engine: Engine, count: int) -> list[Cluster]:
    with Session(engine, expire_on_commit=False) as s:
        clusters = [Cluster(name=f"c{n}", project_id="p") for n in range(count)]
        s.add_all(clusters)
        s.commit()
        return clusters


def run(bench: Bench) -> dict[str, float]:
    engine = fresh_engine(bench)
    n = 200 if bench.quick else 1000
    rounds = 5 if bench.quick else 15
    clusters = _clusters(engine, n // len(_NAMES))
    items = [(c, name) for c in clusters for name in _NAMES]

    # The resources are loaded once, in the session the API calls use, as in a
    # request that has its resources at hand; each call commits its tasks.
    session = Session(engine, expire_on_commit=False)
    session.add_all(clusters)

    def api() -> None:
        orm.spawn_tasks(session, items)
        session.commit()

    def api_after() -> None:
        orm.spawn_tasks(session, items, after=_AFTER)
        session.commit()

    def api_in_request() -> None:
        rid = new_request_id()
        open_operation(session.connection(), OperationFields(rid, "POST", "/clusters"))
        with request_context(RequestContext(rid, operation_id=rid)):
            orm.spawn_tasks(session, items)
        session.commit()

    def core() -> None:
        now = utcnow()
        rules = DEFAULT_RULES.row_values()  # what the API writes for a name's rules
        rows = [
            {
                "id": str(uuid.uuid4()),
                "request_id": None,
                "resource_type": "cluster",
                "resource_id": c.id,
                "cluster_id": c.id,
                "name": name,
                "state": "pending",
                "message": None,
                "project_id": c.project_id,
                "user_id": None,
                "attempts": 0,
                "max_attempts": rules["max_attempts"],
                "heartbeat_timeout": rules["heartbeat_timeout"],
                "start_deadline": now + (DEFAULT_RULES.start_timeout or timedelta(0)),
                "not_before": None,
                "rules": rules["rules"],
                "cancel_requested": False,
                "created_at": now,
                "updated_at": now,
            }
            for c, name in items
        ]
        with engine.begin() as conn:
            conn.execute(insert(tasks_table), rows)

    try:
        api(), core()  # warm up: caches, connections
        times = interleaved(
            {"api": api, "core": core, "api_after": api_after, "api_in_request": api_in_request},
            rounds=rounds,
        )
    finally:
        session.close()
        orm.drop_all(engine)
        engine.dispose()
    ratio = times["api"] / times["core"]
    ratio_after = times["api_after"] / times["core"]
    bench.table(
        f"spawning {len(items):,} tasks on {len(clusters):,} resources, committed",
        [
            ("Core insert of the same rows", times["core"] * 1000, 1.0),
            ("spawn_tasks (public API)", times["api"] * 1000, ratio),
            ("spawn_tasks with after=", times["api_after"] * 1000, ratio_after),
            (
                "spawn_tasks in a request (+ operation)",
                times["api_in_request"] * 1000,
                times["api_in_request"] / times["core"],
            ),
        ],
        ["path", "median ms", "x Core"],
    )
    return {
        "spawn_ratio_vs_core": ratio,
        "spawn_ratio_vs_core_with_dependencies": ratio_after,
    }
