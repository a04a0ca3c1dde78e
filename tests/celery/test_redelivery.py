"""No message lost: a published task that does not start in time is published again.

The broker loses messages that the bridge published: a Redis without
persistence killed with ``kill -9`` while they wait, ``celery purge``, a
deleted queue, a whole ``celery worker`` (main process and pool) killed with
``kill -9`` while it holds messages. Each time every task still ends
``succeeded``, run once (a redelivery of a message that did arrive runs
nothing), because the sweeper publishes again what was published but not
started within the task's ``redeliver_after``.

Real brokers and real worker processes, on PostgreSQL: a private
``redis-server`` of the module's own (:mod:`tests.celery.redis_server`), and a
private vhost on the machine's RabbitMQ.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from amqp.exceptions import ChannelError
from celery import Celery
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import Toolkit
from tasktoolkit.celery import CeleryBridge
from tasktoolkit.orm import Task, TaskRules
from tests.brokers import private_broker
from tests.celery.conftest import ROOT, Counting, Workers, wait_for
from tests.celery.redis_server import PrivateRedis
from tests.models import Cluster

#: Short bounds, so that a lost message costs seconds.
RULES = TaskRules(
    heartbeat_timeout=timedelta(seconds=2),
    redeliver_after=timedelta(seconds=3),
    max_attempts=5,
    backoff=timedelta(0),
    jitter=0,
)
#: The runs of the whole-worker kill.
KILLS = 10


class Broker:
    """The module's broker: its URL, and the private Redis server behind it, if it is one."""

    def __init__(self, url: str, redis: PrivateRedis | None = None) -> None:
        self.url = url
        self.redis = redis

    def queued(self) -> int:
        """How many messages wait in Celery's default queue."""
        app = Celery("tasktoolkit-queued", broker=self.url, set_as_current=False)
        try:
            with app.connection_for_write() as connection:
                channel = connection.default_channel
                try:
                    declared = channel.queue_declare(queue="celery", passive=True)
                except ChannelError:  # no such queue (RabbitMQ closes the channel)
                    return 0
                return int(declared.message_count)
        finally:
            app.close()


@pytest.fixture(scope="module")
def backend() -> str:
    """Several processes at once, each with its transactions: PostgreSQL."""
    return "postgresql"


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    if request.param == "rabbitmq":
        with private_broker("rabbitmq") as url:
            yield Broker(url)
        return
    try:
        server = PrivateRedis()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        server.start()
        yield Broker(server.url, server)
    finally:
        server.close()


@pytest.fixture(scope="module")
def broker_url(broker: Broker) -> str:
    return broker.url


@pytest.fixture
def stopped(idle_workers: Workers) -> Iterator[Workers]:
    """The module's workers, every one stopped after the test."""
    yield idle_workers
    idle_workers.stop()


def spawn(sessions: sessionmaker[Session], name: str, count: int) -> list[str]:
    with sessions() as session:
        cluster = Cluster(name="c", project_id="p1")
        session.add(cluster)
        session.flush()
        ids = [t.id for t in cluster.spawn_tasks([name] * count, rules=RULES)]
        session.commit()
    return ids


def states(sessions: sessionmaker[Session], ids: list[str]) -> Counter[str]:
    with sessions() as session:
        return Counter(session.scalars(select(Task.state).where(Task.id.in_(ids))))


def all_published(sessions: sessionmaker[Session], ids: list[str]) -> bool:
    with sessions() as session:
        query = select(Task.id).where(Task.id.in_(ids), Task.published_at.is_not(None))
        return len(session.scalars(query).all()) == len(ids)


def settle(
    toolkit: Toolkit, bridge: CeleryBridge, sessions: sessionmaker[Session], ids: list[str]
) -> None:
    """Run the reaper and the sweeper (as ``tasktoolkit reap`` does) until every task
    succeeded."""

    def done() -> bool:
        toolkit.reap()
        bridge.sweep()
        return states(sessions, ids) == {"succeeded": len(ids)}

    wait_for(done, f"{len(ids)} tasks succeeded", seconds=90)


def ran_once(workers: Workers, ids: list[str], event: str = "ran") -> None:
    runs = Counter(t for t, _, e, _, _ in workers.runs() if t in set(ids) and e == event)
    assert runs == dict.fromkeys(ids, 1)


def kill_redis(broker: Broker, workers: Workers) -> None:
    """``kill -9`` the Redis server and start it again: empty, without persistence."""
    assert broker.redis is not None
    broker.redis.kill()
    broker.redis.start()


def purge(broker: Broker, workers: Workers) -> None:
    """``celery purge -f``, as an operator would."""
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.celery.worker_app", "purge", "-f"],
        cwd=ROOT,
        env=workers.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Purged 8 messages" in done.stdout, done.stdout


def delete_queue(broker: Broker, workers: Workers) -> None:
    """Delete Celery's default queue (a worker declares it again when it starts)."""
    app = Celery("tasktoolkit-delete", broker=broker.url, set_as_current=False)
    try:
        with app.connection_for_write() as connection:
            # Bound as Celery declares it (kombu's Redis channel deletes what it knows bound).
            queue = app.amqp.queues["celery"](connection.default_channel)
            queue.declare()
            queue.delete()
    finally:
        app.close()


@pytest.mark.parametrize(
    "lose",
    [
        pytest.param(kill_redis, id="redis-killed"),
        pytest.param(purge, id="celery-purge"),
        pytest.param(delete_queue, id="queue-deleted"),
    ],
)
def test_queued_messages_the_broker_lost_are_published_again(
    broker: Broker,
    toolkit: Toolkit,
    bridge: CeleryBridge,
    counting: Counting,
    session_factory: sessionmaker[Session],
    stopped: Workers,
    lose: Callable[[Broker, Workers], None],
) -> None:
    if lose is kill_redis and broker.redis is None:
        pytest.skip("RabbitMQ keeps its queues on disk; the shared server is never killed")
    ids = spawn(session_factory, "quick", 8)  # no worker yet: the messages wait
    wait_for(lambda: all_published(session_factory, ids), "the 8 tasks published")
    assert broker.queued() == 8
    lose(broker, stopped)
    assert broker.queued() == 0
    swept = counting.counts["swept"]
    stopped.start("b")
    settle(toolkit, bridge, session_factory, ids)
    ran_once(stopped, ids)
    assert counting.counts["swept"] - swept >= 8  # published again, each once at least


def test_a_whole_worker_killed_mid_task_loses_nothing_run_after_run(
    toolkit: Toolkit,
    bridge: CeleryBridge,
    session_factory: sessionmaker[Session],
    engine: Engine,
    stopped: Workers,
) -> None:
    stopped.start("b")
    for run in range(KILLS):
        ids = set(spawn(session_factory, "brief", 6))  # 2 at a time on the worker's 2 processes

        def events(kind: str, ids: set[str] = ids) -> set[str]:
            return {t for t, _, e, _, _ in stopped.runs() if t in ids and e == kind}

        wait_for(lambda: events("started"), f"run {run}: a task started")
        stopped.kill("b")  # the main process and its pool, holding its messages
        stopped.start("b")
        settle(toolkit, bridge, session_factory, list(ids))
        assert events("finished") == ids, f"run {run}"
