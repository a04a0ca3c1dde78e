"""The Metrics hook counts what the toolkit committed: every family, on every database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.orm import Session

from tasktoolkit import Toolkit
from tasktoolkit.errors import TaskFailure
from tasktoolkit.orm import TaskRules, cancel_task, spawn_tasks
from tests.clock import passed
from tests.metrics.scrapes import Scrape, family, value
from tests.models import Node
from tests.orm._db import InOperation

#: A second attempt at once after a retryable failure.
RETRY_AT_ONCE = TaskRules(max_attempts=2, backoff=timedelta(0), jitter=0)
RAN = ("fine", "broken", "flaky")


def _run(toolkit: Toolkit) -> None:
    """Run every task of :data:`RAN`: ``fine`` succeeds, ``broken`` fails, ``flaky``
    fails retryably once, then succeeds."""
    worker = toolkit.worker(RAN)
    while (job := worker.claim()) is not None:
        with job:
            if job.name == "broken":
                raise TaskFailure("wiring_failed", "no port")
            if job.name == "flaky" and job.attempts == 1:
                raise TaskFailure("agent_busy", "try again", retryable=True)


def test_every_family_counts_what_was_committed(
    toolkit: Toolkit,
    session: Session,
    node: Node,
    in_operation: InOperation,
    scrape: Callable[[], Scrape],
) -> None:
    with in_operation():
        spawned = node.spawn_tasks(["fine", "broken", "early", "abandoned", "unstarted"])
        spawn_tasks(session, [(node, "flaky")], rules=RETRY_AT_ONCE)
    session.commit()
    cancel_task(session, spawned[2].id)
    session.commit()
    _run(toolkit)
    assert toolkit.worker(["abandoned"], host="gone:1").claim() is not None
    before = scrape()
    assert family(before, "tasktoolkit_tasks") == {
        (("name", "abandoned"), ("queue", ""), ("state", "running")): 1.0,
        (("name", "unstarted"), ("queue", ""), ("state", "pending")): 1.0,
    }
    (age,) = family(before, "tasktoolkit_oldest_pending_age_seconds").values()
    assert 0 <= age < 60

    passed(toolkit.engine, timedelta(hours=2))
    reaped = toolkit.reap()
    assert (len(reaped.failed), len(reaped.not_started), len(reaped.requests)) == (1, 1, 1)
    passed(toolkit.engine, timedelta(days=30))
    purged = toolkit.purge()
    assert (purged.tasks, purged.operations) == (6, 1)
    after = scrape()

    assert family(after, "tasktoolkit_task_queue_seconds_count") == {
        (("name", name),): 1.0 for name in ("fine", "broken", "flaky", "abandoned")
    }
    assert family(after, "tasktoolkit_task_run_seconds_count") == {
        (("name", "fine"), ("outcome", "succeeded")): 1.0,
        (("name", "broken"), ("outcome", "failed")): 1.0,
        (("name", "flaky"), ("outcome", "failed")): 1.0,
        (("name", "flaky"), ("outcome", "succeeded")): 1.0,
        (("name", "abandoned"), ("outcome", "failed")): 1.0,
    }
    # The lost worker's attempt ran until the reaper's moment, two hours on.
    ran = value(after, "tasktoolkit_task_run_seconds_sum", name="abandoned", outcome="failed")
    assert ran is not None and 7000 < ran < 7300
    assert family(after, "tasktoolkit_task_finished_total") == {
        (("error_code", ""), ("name", "fine"), ("outcome", "succeeded")): 1.0,
        (("error_code", "wiring_failed"), ("name", "broken"), ("outcome", "failed")): 1.0,
        (("error_code", ""), ("name", "flaky"), ("outcome", "succeeded")): 1.0,
        (("error_code", ""), ("name", "early"), ("outcome", "cancelled")): 1.0,
        (("error_code", "worker_lost"), ("name", "abandoned"), ("outcome", "failed")): 1.0,
        (("error_code", "not_started"), ("name", "unstarted"), ("outcome", "failed")): 1.0,
    }
    assert family(after, "tasktoolkit_reaped_total") == {
        (("reason", "worker_lost"),): 1.0,
        (("reason", "not_started"),): 1.0,
        (("reason", "request_lost"),): 1.0,
        (("reason", "orphaned"),): 0.0,
    }
    assert family(after, "tasktoolkit_purged_total") == {
        (("table", "tasks"),): 6.0,
        (("table", "operations"),): 1.0,
    }
    assert family(after, "tasktoolkit_operations_finished_total") == {
        (("outcome", "succeeded"),): 0.0,
        (("outcome", "failed"),): 1.0,
        (("outcome", "cancelled"),): 0.0,
    }
    assert family(after, "tasktoolkit_tasks") == {}
    assert family(after, "tasktoolkit_oldest_pending_age_seconds") == {}


def test_nothing_is_counted_of_a_rolled_back_move(
    toolkit: Toolkit, session: Session, node: Node, scrape: Callable[[], Scrape]
) -> None:
    (task,) = node.spawn_tasks(["fine"])
    session.commit()
    cancel_task(session, task.id)
    session.rollback()
    assert family(scrape(), "tasktoolkit_task_finished_total") == {}
