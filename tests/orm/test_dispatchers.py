"""A dispatcher per task name: what each queue bridge of an engine is handed, after commit.

The dispatchers here only record what they are handed (the real bridges run
against real brokers in ``tests/celery``): tasks made pending go to the
dispatcher of their name once committed, never on a rollback; a name bound
to none is left to database workers; a name is bound once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit.errors import HandlerConflictError, InvalidTransitionError
from tasktoolkit.orm import Worker, cancel_task
from tasktoolkit.orm._events import DISPATCHER, Dispatchers, dispatchers
from tasktoolkit.orm._publishing import to_publish
from tasktoolkit.orm._transitions import start_task, succeed_task
from tasktoolkit.signals import TaskChange
from tests.models import Cluster, Node


class Recording:
    """A dispatcher that keeps what it is handed."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str | None]] = []
        self.revoked: list[str] = []

    def publish(self, tasks: Sequence[TaskChange]) -> None:
        self.published += [(t.name, t.old_state) for t in tasks]

    def revoke(self, tasks: Sequence[TaskChange]) -> None:
        self.revoked += [t.name for t in tasks]


@pytest.fixture
def bound(engine: Engine) -> Iterator[tuple[Recording, Recording]]:
    """Two dispatchers on the engine: ``a`` runs ``wire`` and ``boot``, ``b`` runs ``scan``."""
    registry = dispatchers(engine)
    a, b = Recording(), Recording()
    for name, dispatcher in (("wire", a), ("boot", a), ("scan", b)):
        registry.bind(name, dispatcher)
    yield a, b
    registry.release(a)
    registry.release(b)


def spawn(sessions: sessionmaker[Session], names: list[str], *, commit: bool = True) -> list[str]:
    with sessions() as session:
        cluster = Cluster(name="c")
        session.add(cluster)
        session.flush()
        ids = [t.id for t in cluster.spawn_tasks(names)]
        if commit:
            session.commit()
        else:
            session.rollback()
    return ids


def test_each_name_goes_to_its_dispatcher_after_commit(
    session_factory: sessionmaker[Session], bound: tuple[Recording, Recording]
) -> None:
    a, b = bound
    spawn(session_factory, ["wire", "scan", "local", "boot"])
    assert a.published == [("wire", None), ("boot", None)]
    assert b.published == [("scan", None)]


def test_nothing_is_dispatched_on_a_rollback(
    session_factory: sessionmaker[Session], bound: tuple[Recording, Recording]
) -> None:
    spawn(session_factory, ["wire", "scan"], commit=False)
    assert bound[0].published == bound[1].published == []


def test_a_cancel_of_a_running_task_reaches_its_dispatcher(
    session_factory: sessionmaker[Session], engine: Engine, bound: tuple[Recording, Recording]
) -> None:
    a, b = bound
    (scan, local) = spawn(session_factory, ["scan", "local"])
    worker = Worker(engine, ["scan", "local"])
    try:
        jobs = worker.claim_many(2)
        assert {j.id for j in jobs} == {scan, local}
        with session_factory() as session:
            cancel_task(session, scan)
            cancel_task(session, local)
            session.commit()
    finally:
        worker.close()
    assert (a.revoked, b.revoked) == ([], ["scan"])


def test_a_name_runs_on_one_dispatcher(engine: Engine, bound: tuple[Recording, Recording]) -> None:
    a, b = bound
    registry = dispatchers(engine)
    assert registry is dispatchers(engine)  # one per engine
    registry.bind("wire", a)  # again, the same: nothing changes
    with pytest.raises(HandlerConflictError, match="'wire' already runs on"):
        registry.bind("wire", b)
    assert registry.get("wire") is a and registry.names(b) == {"scan"}
    registry.release(a)
    assert registry.get("wire") is None and registry.names(a) == frozenset()
    registry.bind("wire", b)
    assert registry.get("wire") is b


def test_an_engine_without_dispatchers_publishes_nothing(
    session_factory: sessionmaker[Session], engine: Engine, bound: tuple[Recording, Recording]
) -> None:
    bare = engine.execution_options(**{DISPATCHER: None})
    spawn(sessionmaker(bare), ["wire"])
    assert bound[0].published == []
    assert isinstance(engine.get_execution_options()[DISPATCHER], Dispatchers)


def test_a_task_waiting_on_another_is_published_once_it_is_ready(
    session_factory: sessionmaker[Session], bound: tuple[Recording, Recording]
) -> None:
    a, b = bound
    with session_factory() as session:
        cluster = Cluster(name="c")
        session.add(cluster)
        session.flush()
        wire, _ = cluster.spawn_tasks(["wire", "boot"], after={"boot": ["wire"]})
        session.commit()
        assert a.published == [("wire", None)]  # boot waits on wire
        start_task(session, wire.id, host="w1")
        session.commit()
        succeed_task(session, wire.id, host="w1")
        assert a.published == [("wire", None)]  # not before the commit
        session.commit()
    assert a.published == [("wire", None), ("boot", "pending")]
    assert b.published == []


def test_the_sweeper_finds_a_waiting_task_only_once_it_is_ready(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        cluster = Cluster(name="c")
        session.add(cluster)
        session.flush()
        wire, _ = cluster.spawn_tasks(["wire", "boot"], after={"boot": ["wire"]})
        session.commit()
        found = to_publish(session, ["wire", "boot"], sweep_after=timedelta(0), limit=10)
        assert [t.name for t in found] == ["wire"]
        session.rollback()
        start_task(session, wire.id, host="w1")
        succeed_task(session, wire.id, host="w1")
        session.commit()
        found = to_publish(session, ["wire", "boot"], sweep_after=timedelta(0), limit=10)
        assert [t.name for t in found] == ["boot"]


def test_the_next_exclusive_task_is_published_when_the_one_before_it_ends(
    engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    recording = Recording()
    registry = dispatchers(engine)
    registry.bind("one_at_a_time", recording)
    try:
        with session_factory() as session:
            cluster = Cluster(name="c")
            session.add(cluster)
            session.flush()
            node = Node(cluster_id=cluster.id, name="n")
            session.add(node)
            session.flush()
            first, second = node.spawn_tasks(["one_at_a_time", "one_at_a_time"])
            session.commit()
        worker = Worker(engine, ["one_at_a_time"], host="w1")
        # A delivery of the second while the first waits or runs starts nothing.
        with pytest.raises(InvalidTransitionError):
            worker.start(second.id)
        job = worker.start(first.id)
        with pytest.raises(InvalidTransitionError):
            worker.start(second.id)
        recording.published.clear()
        job.succeed()
        assert recording.published == [("one_at_a_time", "pending")]
        worker.start(second.id).succeed()
    finally:
        registry.release(recording)
