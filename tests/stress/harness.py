"""Many processes at once on one database: workers, a canceller, a purge (and a reaper).

:func:`run` seeds a database, starts the processes (``multiprocessing``
'spawn', so each is a fresh interpreter with its own connections, as real
workers are), waits for them with a deadline and checks what they left:

- every task was started by exactly one worker, once (no double move);
- every task ended in the state its mover recorded (no lost update);
- each operation's ``task_counts`` add up to its tasks' real states (plus
  those purged, whose counts stay), and the operation's state follows them;
- the purge deleted exactly the expired records, each counted once, and
  nothing else; the reaper found nothing to reap among live workers.

Each process writes what it did to a JSON file of its own; the checks
compare those files with the database. Used by ``tests/stress`` (modest
sizes) and ``benchmarks/workers.py`` (bigger).
"""

from __future__ import annotations

import json
import multiprocessing
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine, create_engine
from sqlalchemy.orm import Session

from tasktoolkit import Settings, orm
from tasktoolkit.context import RequestContext, new_request_id, request_context
from tasktoolkit.errors import InvalidTransitionError, TaskCancelRequested, TaskFailure
from tasktoolkit.orm._operations import OperationFields, end_request, open_operation
from tasktoolkit.orm._records import operations_table, tasks_table
from tasktoolkit.orm._types import utcnow
from tests.models import Cluster  # also registers the test resource types in each process

NAMES = ("build", "wire")


@dataclass(frozen=True)
class Plan:
    """The sizes of a run."""

    workers: int = 4
    operations: int = 8
    tasks_per_operation: int = 125
    #: Finished tasks that expired before the run (purged during it).
    expired_tasks: int = 300
    #: One in how many live tasks the canceller tries to cancel (0: no canceller).
    cancel_one_in: int = 10
    #: One in how many tasks a worker fails on purpose.
    fail_one_in: int = 7
    #: Whether workers also report progress and check for cancellation.
    chatty: bool = True
    #: Whether a purge (and reaper) process runs alongside.
    purge: bool = True
    #: How many tasks a worker claims per transaction (``Worker.claim_many``).
    claim_batch: int = 1
    deadline_s: float = 240.0


@dataclass
class Seeded:
    """What :func:`seed` wrote."""

    live_tasks: set[str] = field(default_factory=set)
    expired_tasks: set[str] = field(default_factory=set)
    kept_tasks: set[str] = field(default_factory=set)
    live_operations: set[str] = field(default_factory=set)
    old_operations: set[str] = field(default_factory=set)
    expired_operations: set[str] = field(default_factory=set)


@dataclass
class Outcome:
    """What the processes did and how long the workers took."""

    seeded: Seeded
    moves: list[tuple[str, str, str]]  # (task id, worker host, final state)
    cancelled_pending: list[str]
    purged_tasks: int
    purged_operations: int
    reaped: int
    #: From the workers' first claim to their last finish.
    work_seconds: float
    problems: list[str]


def _cluster(session: Session) -> Cluster:
    cluster = Cluster(name="stress")
    session.add(cluster)
    session.flush()
    return cluster


def seed(engine: Engine, plan: Plan) -> Seeded:
    """Live operations with pending tasks; old finished ones, partly expired."""
    seeded = Seeded()
    now = utcnow()
    if engine.dialect.name == "sqlite":
        # Several processes on one SQLite file: WAL lets readers go on while one
        # writes (docs/workers.md recommends it); it stays set in the file.
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    with Session(engine) as s:
        for n in range(plan.operations):
            rid = new_request_id()
            open_operation(s.connection(), OperationFields(rid, "POST", "/clusters"))
            cluster = _cluster(s)
            with request_context(RequestContext(rid, operation_id=rid)):
                tasks = cluster.spawn_tasks(
                    NAMES[(n + i) % len(NAMES)] for i in range(plan.tasks_per_operation)
                )
            end_request(s.connection(), rid, 202)
            seeded.live_operations.add(rid)
            seeded.live_tasks.update(t.id for t in tasks)
            s.commit()
        # Finished before the run: tasks expired (the purge's work) and kept,
        # in operations that are kept (their counts must survive) or expired.
        cluster = _cluster(s)
        for kind, expires in (
            ("old", now + timedelta(days=1)),
            ("expired", now - timedelta(minutes=5)),
        ):
            rid = new_request_id()
            rows = [
                _finished_row(cluster.id, rid, now - timedelta(minutes=1 + i % 60))
                for i in range(plan.expired_tasks // 2)
            ]
            s.execute(insert(tasks_table), rows)
            s.execute(
                insert(operations_table).values(
                    id=rid,
                    method="POST",
                    path="/clusters",
                    state="succeeded",
                    http_status=202,
                    tasks_succeeded=len(rows),
                    created_at=now,
                    updated_at=now,
                    finished_at=now,
                    expires_at=expires,
                )
            )
            seeded.expired_tasks.update(r["id"] for r in rows)
            (seeded.old_operations if kind == "old" else seeded.expired_operations).add(rid)
        keep = [
            _finished_row(cluster.id, None, now + timedelta(days=1)),
            _finished_row(cluster.id, None, None),
        ]
        s.execute(insert(tasks_table), keep)
        seeded.kept_tasks.update(r["id"] for r in keep)
        s.commit()
    return seeded


def _finished_row(cluster_id: str, request_id: str | None, expires: Any) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": str(uuid.uuid4()),
        "request_id": request_id,
        "resource_type": "cluster",
        "resource_id": cluster_id,
        "cluster_id": cluster_id,
        "name": "build",
        "state": "succeeded",
        "progress": 100,
        "attempts": 1,
        "created_at": now,
        "updated_at": now,
        "finished_at": now,
        "expires_at": expires,
    }


# -- the processes (module-level functions: 'spawn' imports them by name) --------


def _engine(url: str) -> Engine:
    return orm.prepare_engine(create_engine(url, pool_size=2))


def _dump(path: str, data: object) -> None:
    Path(path).write_text(json.dumps(data))


def worker_process(url: str, host: str, plan: Plan, out: str, deadline: float) -> None:
    """Claim and finish tasks until none is pending; record each move."""
    engine = _engine(url)
    worker = orm.Worker(engine, NAMES, host=host)
    moves: list[tuple[str, str, str]] = []
    problems: list[str] = []
    first = last = None
    try:
        while time.time() < deadline:
            if plan.claim_batch > 1:
                jobs = worker.claim_many(plan.claim_batch)
            else:
                jobs = [job] if (job := worker.claim()) is not None else []
            if not jobs:
                with Session(engine) as s:
                    pending = s.execute(
                        select(tasks_table.c.id).where(tasks_table.c.state == "pending").limit(1)
                    ).first()
                if pending is None:
                    break
                continue  # all pending rows were locked by other claims a moment ago
            first = first or time.time()
            for job in jobs:
                moves.append((job.id, host, _work(job, plan)))
            last = time.time()
        else:
            problems.append(f"{host}: deadline passed")
    except Exception as exc:
        problems.append(f"{host}: {type(exc).__name__}: {exc}")
    finally:
        _dump(out, {"moves": moves, "problems": problems, "first": first, "last": last})
        engine.dispose()


def _work(job: orm.Job, plan: Plan) -> str:
    """Do one claimed job as the plan says; the state it ends in."""
    outcome = "succeeded"
    with job:
        if plan.chatty:
            job.progress(50, "half way")
            if job.cancel_requested():
                outcome = "cancelled"
                raise TaskCancelRequested(job.id)
        if int(job.id[:8], 16) % plan.fail_one_in == 0:
            outcome = "failed"
            raise TaskFailure("stress", "failed on purpose")
    return outcome


def canceller_process(url: str, task_ids: list[str], out: str, deadline: float) -> None:
    """Cancel the given tasks, one transaction each; record which were pending."""
    engine = _engine(url)
    cancelled: list[str] = []
    problems: list[str] = []
    try:
        for task_id in task_ids:
            if time.time() > deadline:
                problems.append("canceller: deadline passed")
                break
            with Session(engine) as s:
                try:
                    task = orm.cancel_task(s, task_id)
                    state = task.state
                    s.commit()
                except InvalidTransitionError:
                    continue  # already finished: nothing to cancel
                if state == "cancelled":
                    cancelled.append(task_id)
    except Exception as exc:
        problems.append(f"canceller: {type(exc).__name__}: {exc}")
    finally:
        _dump(out, {"cancelled": cancelled, "problems": problems})
        engine.dispose()


def purger_process(url: str, stop: Any, out: str, deadline: float) -> None:
    """Purge (small batches) and reap until told to stop, then purge once more."""
    engine = _engine(url)
    tasks = operations = reaped = 0
    problems: list[str] = []
    try:
        while True:
            stopping = stop.is_set()
            result = orm.purge(engine, settings=Settings(batch_size=25))
            tasks += result.tasks
            operations += result.operations
            reaped += orm.reap(engine).total
            if stopping:
                break
            if time.time() > deadline:
                problems.append("purger: deadline passed")
                break
            stop.wait(0.05)  # between rounds, woken at once by the stop event
    except Exception as exc:
        problems.append(f"purger: {type(exc).__name__}: {exc}")
    finally:
        _dump(
            out, {"tasks": tasks, "operations": operations, "reaped": reaped, "problems": problems}
        )
        engine.dispose()


def run(engine: Engine, plan: Plan, workdir: Path) -> Outcome:
    """Seed, run every process to its end (or the deadline), gather what they did."""
    url = engine.url.render_as_string(hide_password=False)
    seeded = seed(engine, plan)
    ctx = multiprocessing.get_context("spawn")
    deadline = time.time() + plan.deadline_s
    stop = ctx.Event()
    files: dict[str, Path] = {}

    def start(name: str, target: Callable[..., None], *args: Any) -> Any:
        files[name] = workdir / f"{name}.json"
        process = ctx.Process(target=target, args=(url, *args, str(files[name]), deadline))
        process.start()
        return process

    purger = start("purger", purger_process, stop) if plan.purge else None
    busy = [start(f"worker-{n}", worker_process, f"worker-{n}", plan) for n in range(plan.workers)]
    if plan.cancel_one_in:
        targets = sorted(seeded.live_tasks)[:: plan.cancel_one_in]
        busy.append(start("canceller", canceller_process, targets))
    problems: list[str] = []
    for process in busy:
        process.join(timeout=max(0.0, deadline - time.time()) + 10)
    stop.set()
    if purger is not None:
        purger.join(timeout=max(0.0, deadline - time.time()) + 30)
    for process in [*busy, *([purger] if purger else [])]:
        if process.is_alive():
            process.kill()
            problems.append(f"process {process.pid} did not end in time")
        elif process.exitcode != 0:
            problems.append(f"process {process.pid} exited with {process.exitcode}")

    reports = {name: json.loads(path.read_text()) for name, path in files.items() if path.exists()}
    problems += [p for r in reports.values() for p in r.get("problems", [])]
    purged = reports.get("purger", {})
    workers = [r for name, r in reports.items() if name.startswith("worker") and r["first"]]
    span = max(r["last"] for r in workers) - min(r["first"] for r in workers) if workers else 0.0
    return Outcome(
        seeded=seeded,
        moves=[
            (m[0], m[1], m[2])
            for name, report in reports.items()
            if name.startswith("worker")
            for m in report["moves"]
        ],
        cancelled_pending=reports.get("canceller", {}).get("cancelled", []),
        purged_tasks=purged.get("tasks", 0),
        purged_operations=purged.get("operations", 0),
        reaped=purged.get("reaped", 0),
        work_seconds=span,
        problems=problems,
    )


def double_moves(outcome: Outcome) -> list[str]:
    """Tasks that more than one worker (or one worker twice) started and finished."""
    started = Counter(task_id for task_id, _, _ in outcome.moves)
    return [t for t, n in started.items() if n > 1]


def lost_updates(engine: Engine, outcome: Outcome) -> list[str]:
    """Tasks whose state is not the one their mover recorded."""
    recorded = {task_id: state for task_id, _, state in outcome.moves}
    recorded.update({task_id: "cancelled" for task_id in outcome.cancelled_pending})
    with engine.connect() as conn:
        states = {
            r.id: r.state for r in conn.execute(select(tasks_table.c.id, tasks_table.c.state))
        }
    return [t for t, s in recorded.items() if states.get(t) != s]


def check(engine: Engine, plan: Plan, outcome: Outcome) -> list[str]:
    """Everything that went wrong (an empty list when the run was sound)."""
    wrong = list(outcome.problems)
    seeded = outcome.seeded
    twice = double_moves(outcome)
    if twice:
        wrong.append(f"{len(twice)} tasks moved by more than one worker, e.g. {twice[0]}")
    recorded = {task_id: state for task_id, _, state in outcome.moves}
    overlap = set(recorded) & set(outcome.cancelled_pending)
    if overlap:
        wrong.append(f"{len(overlap)} tasks both run by a worker and cancelled while pending")
    recorded.update({task_id: "cancelled" for task_id in outcome.cancelled_pending})

    with engine.connect() as conn:
        rows = conn.execute(
            select(
                tasks_table.c.id,
                tasks_table.c.state,
                tasks_table.c.attempts,
                tasks_table.c.request_id,
                tasks_table.c.host,
            )
        ).all()
        operations = {r.id: r for r in conn.execute(select(operations_table)).all()}
    states = {r.id: r.state for r in rows}
    missing = seeded.live_tasks - set(recorded)
    if missing:
        wrong.append(f"{len(missing)} live tasks moved by nobody, e.g. {sorted(missing)[0]}")
    lost = [t for t, s in recorded.items() if states.get(t) != s]
    if lost:
        t = lost[0]
        wrong.append(
            f"{len(lost)} lost updates, e.g. {t}: recorded {recorded[t]}, is {states.get(t)}"
        )
    for r in rows:
        if r.id in seeded.live_tasks and r.state != "cancelled" and r.attempts != 1:
            wrong.append(f"task {r.id} was started {r.attempts} times")
            break
    # Purge: exactly the expired records went, each counted once.
    expected_left = seeded.live_tasks | seeded.kept_tasks
    if set(states) != expected_left:
        wrong.append(
            f"tasks left: {len(set(states) - expected_left)} that should be gone, "
            f"{len(expected_left - set(states))} deleted that were not expired"
        )
    if plan.purge and outcome.purged_tasks != len(seeded.expired_tasks):
        wrong.append(f"purge counted {outcome.purged_tasks}, not {len(seeded.expired_tasks)}")
    if plan.purge and set(operations) != seeded.live_operations | seeded.old_operations:
        wrong.append("operations left are not exactly the unexpired ones")
    if plan.purge and outcome.purged_operations != len(seeded.expired_operations):
        wrong.append(f"purge counted {outcome.purged_operations} operations")
    if outcome.reaped:
        wrong.append(f"the reaper moved {outcome.reaped} tasks of live workers")
    # Operation counts add up to the real states (purged tasks keep their counts).
    real = Counter((r.request_id, r.state) for r in rows if r.request_id is not None)
    for rid in seeded.live_operations | seeded.old_operations:
        op = operations.get(rid)
        if op is None:
            continue
        # The old operation's succeeded tasks were all purged; its counts stay.
        purged = op.tasks_succeeded if rid in seeded.old_operations else 0
        if rid in seeded.old_operations and purged != len(seeded.expired_tasks) // 2:
            wrong.append(f"old operation {rid} lost its counts: {purged} succeeded")
        for state in ("pending", "running", "succeeded", "failed", "cancelled"):
            want = real[(rid, state)] + (purged if state == "succeeded" else 0)
            have = getattr(op, f"tasks_{state}")
            if have != want:
                wrong.append(f"operation {rid}: tasks_{state} is {have}, tasks say {want}")
        failed = op.tasks_failed > 0
        expect = "failed" if failed else "cancelled" if op.tasks_cancelled else "succeeded"
        if op.state != expect:
            wrong.append(f"operation {rid} is {op.state}, expected {expect}")
    return wrong
