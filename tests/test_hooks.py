"""Hooks: called in order, each one's failure its own, async refused, one outage policy."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from tasktoolkit.hooks import Event, Hook, Hooks, JobInfo


class Recorder(Hook):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    @contextmanager
    def around_job(self, job: JobInfo) -> Iterator[None]:
        self.log.append(f"{self.name} enter {job.name}")
        yield
        self.log.append(f"{self.name} leave {job.name}")

    def happened(self, event: Event) -> None:
        self.log.append(f"{self.name} {event.kind} {event.count}")

    def database_unavailable(self, where: str, error: BaseException) -> None:
        self.log.append(f"{self.name} unavailable {where}")


class Broken(Hook):
    @contextmanager
    def around_job(self, job: JobInfo) -> Iterator[None]:
        yield
        raise RuntimeError("broken on the way out")

    def happened(self, event: Event) -> None:
        raise RuntimeError("broken")


JOB = JobInfo("t1", "wire", "port", "p1", None, 1)


def test_around_enters_in_order_and_leaves_in_reverse() -> None:
    log: list[str] = []
    with Hooks(Recorder("a", log), Recorder("b", log)).around_job(JOB):
        log.append("run")
    assert log == ["a enter wire", "b enter wire", "run", "b leave wire", "a leave wire"]


def test_a_hook_that_fails_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []
    hooks = Hooks(Broken(), Recorder("b", log))
    with hooks.around_job(JOB):
        log.append("run")
    hooks.happened(Event("swept", count=3))
    assert log == ["b enter wire", "run", "b leave wire", "b swept 3"]
    failures = [r.getMessage() for r in caplog.records if r.name == "tasktoolkit.hooks"]
    assert len(failures) == 2


def test_a_hook_never_swallows_the_toolkits_error() -> None:
    class Swallowing(Hook):
        @contextmanager
        def around_job(self, job: JobInfo) -> Iterator[None]:
            try:
                yield
            except ValueError:
                pass  # would swallow it, were it a plain context manager

    with pytest.raises(ValueError), Hooks(Swallowing()).around_job(JOB):
        raise ValueError("the job's own error")


def test_no_hooks_cost_a_null_context() -> None:
    assert not Hooks()
    with Hooks().around_job(JOB), Hooks(Hook()).around_job(JOB):
        pass


def test_an_async_hook_is_refused_when_added() -> None:
    class Async(Hook):
        async def happened(self, event: Event) -> None:  # type: ignore[override]
            pass

    with pytest.raises(TypeError, match="coroutine"):
        Hooks(Async())


def test_an_unknown_event_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="not an event kind"):
        Hooks().happened(Event("exploded"))


def test_the_outage_policy_logs_one_line_per_change_and_tells_every_hook_each_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []
    hooks = Hooks(Recorder("a", log))
    down = OperationalError("SELECT 1", {}, Exception("connection refused\ndetails"))
    with caplog.at_level(logging.WARNING, logger="tasktoolkit.hooks"):
        hooks.available("worker.heartbeat")  # no outage: nothing to say
        for n in range(3):
            assert hooks.unavailable("worker.heartbeat", down, doing=f"task t{n}") is True
        hooks.available("worker.heartbeat")
        hooks.available("worker.heartbeat")  # said once
    lost, back = caplog.records
    assert lost.getMessage() == (
        "worker.heartbeat: database unavailable (connection refused); task t0"
    )
    assert back.getMessage().startswith("worker.heartbeat: database back after ")
    assert back.getMessage().endswith(" s (3 tries failed)")
    assert not lost.exc_info and not back.exc_info  # no traceback but at DEBUG
    assert log == ["a unavailable worker.heartbeat"] * 3


def test_the_outage_policy_leaves_other_errors_to_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []
    assert Hooks(Recorder("a", log)).unavailable("x", ValueError("bug")) is False
    assert log == [] and caplog.records == []


def test_hooks_compare_by_their_members() -> None:
    hook: Any = Hook()
    assert Hooks(hook) == Hooks(hook) and Hooks(hook) != Hooks()
    assert list(Hooks(hook) + Hooks(hook)) == [hook, hook]
