"""Task results: a JSON object a worker sets when it succeeds, at most 16 KiB."""

from __future__ import annotations

import math
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from tasktoolkit.errors import InvalidResultError
from tasktoolkit.orm import Task, Worker
from tasktoolkit.orm._transitions import MAX_RESULT_BYTES, succeed_task
from tests.models import Cluster
from tests.orm._db import spawn, task_row


@pytest.fixture
def worker(engine: Engine) -> Worker:
    return Worker(engine, ["build"], host="worker-a")


def test_a_result_set_with_success_reads_back_as_the_same_object(
    session: Session, cluster: Cluster, worker: Worker
) -> None:
    spawn(session, cluster, "build")
    job = worker.claim()
    assert job is not None
    result = {"mac": "fa:16:3e:00:00:01", "ips": ["10.0.0.5"], "nested": {"ok": True, "n": 3}}
    job.succeed("wired", result=result)
    session.expire_all()
    task = session.get(Task, job.id)
    assert task is not None
    assert (task.state, task.message, task.result) == ("succeeded", "wired", result)


def test_a_job_block_that_ends_normally_has_no_result(
    session: Session, cluster: Cluster, worker: Worker, engine: Engine
) -> None:
    (task,) = spawn(session, cluster, "build")
    job = worker.claim()
    assert job is not None
    with job:
        pass
    row = task_row(engine, task.id)
    assert row is not None and row["state"] == "succeeded" and row["result"] is None


def test_a_result_of_exactly_16_kib_is_kept_with_non_ascii_counted_in_bytes(
    session: Session, cluster: Cluster, worker: Worker
) -> None:
    spawn(session, cluster, "build", "build")
    # {"x":"..."} is 8 bytes of JSON around the text.
    fits = {"x": "a" * (MAX_RESULT_BYTES - 8)}
    job = worker.claim()
    assert job is not None
    job.succeed(result=fits)
    session.expire_all()
    assert session.get(Task, job.id).result == fits  # type: ignore[union-attr]
    # Two-byte characters: half as many fit.
    second = worker.claim()
    assert second is not None
    with pytest.raises(InvalidResultError, match="at most 16384 bytes"):
        second.succeed(result={"x": "é" * (MAX_RESULT_BYTES // 2)})


@pytest.mark.parametrize(
    "result",
    [
        pytest.param({"x": "a" * MAX_RESULT_BYTES}, id="too-big"),
        pytest.param(["a", "list"], id="a-list"),
        pytest.param("text", id="a-string"),
        pytest.param({"when": object()}, id="not-json"),
        pytest.param({"n": math.nan}, id="nan"),
        pytest.param({"n": math.inf}, id="infinity"),
        pytest.param({"text": "half\ud800way"}, id="lone-surrogate"),
    ],
)
def test_a_bad_result_is_refused_before_anything_is_written(
    session: Session, cluster: Cluster, worker: Worker, engine: Engine, result: Any
) -> None:
    (task,) = spawn(session, cluster, "build")
    job = worker.claim()
    assert job is not None
    before = task_row(engine, task.id)
    with pytest.raises(InvalidResultError) as raised:
        job.succeed(result=result)
    assert raised.value.status == 400
    assert raised.value.code == "tasktoolkit.invalid_result"
    assert task_row(engine, task.id) == before
    assert not job.finished


def test_succeed_task_in_the_callers_session_keeps_the_result(
    session: Session, cluster: Cluster, worker: Worker
) -> None:
    (task,) = spawn(session, cluster, "build")
    job = worker.claim()
    assert job is not None
    with worker.transaction() as own:
        moved = succeed_task(own, job.id, host="worker-a", result={"k": (1, 2)})
        # As it will read back: a tuple is a JSON list.
        assert moved.result == {"k": [1, 2]}
    session.expire_all()
    assert session.get(Task, task.id).result == {"k": [1, 2]}  # type: ignore[union-attr]
