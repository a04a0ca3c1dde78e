"""The live workers: announced with a worker's first call, beaten, gone when it stops or stalls."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import Settings, Toolkit
from tasktoolkit.errors import ConfigurationError
from tasktoolkit.orm import Worker, reap
from tasktoolkit.orm._records import workers_table
from tasktoolkit.orm._registry import Announcement, LiveWorker, beat, list_workers, serves
from tests.clock import age


@pytest.fixture(autouse=True)
def _clean(session_factory: sessionmaker[Session]) -> None:
    """Every row goes after each test (``session_factory`` deletes them)."""


def workers(engine: Engine) -> dict[str, LiveWorker]:
    with engine.connect() as conn:
        return {w.id: w for w in list_workers(conn)}


def test_a_worker_announces_itself_with_its_first_claim(engine: Engine) -> None:
    worker = Worker(engine, ["l2_wiring", "dhcp"], queues=[None, "node-1"], host="h:1:a")
    assert workers(engine) == {}
    assert worker.claim() is None
    found = workers(engine)["h:1:a"]
    assert (found.kind, found.host, found.pid) == ("database", socket.gethostname(), os.getpid())
    assert found.names == ("dhcp", "l2_wiring")
    assert found.queues == (None, "node-1")
    assert found.timeout == 60 and found.live and found.age < 30
    assert found.started_at == found.beat_at


def test_a_worker_without_names_is_not_listed(engine: Engine) -> None:
    worker = Worker(engine, [], host="h:1:bridge")
    with worker.transaction():
        pass
    worker.claim(["l2_wiring"])
    assert workers(engine) == {}


def test_a_worker_beats_with_its_calls_once_a_third_of_its_timeout_passed(engine: Engine) -> None:
    worker = Worker(engine, ["l2_wiring"], host="h:1:b", settings=Settings(worker_beat_timeout=30))
    worker.claim()
    age(engine, workers_table, beat_at=timedelta(seconds=5))
    worker.claim()  # not due: the beat of 5 s ago stands (in the worker's own count)
    assert workers(engine)["h:1:b"].age >= 5
    worker._beaten = (worker._beaten or 0.0) - 11  # ten seconds (a third) went by
    age(engine, workers_table, beat_at=timedelta(seconds=25))
    worker.claim()
    found = workers(engine)["h:1:b"]
    assert found.live and found.age < 5
    assert found.started_at < found.beat_at


def test_a_worker_that_stops_leaves_the_list(engine: Engine) -> None:
    worker = Worker(engine, ["l2_wiring"], host="h:1:c")
    worker.claim()
    other = Worker(engine, ["l2_wiring"], host="h:1:d")
    other.claim()
    worker.stop(0)
    worker.close()
    assert set(workers(engine)) == {"h:1:d"}


@pytest.mark.parametrize(
    ("ago", "live"),
    [
        pytest.param(timedelta(seconds=50), True, id="within-its-timeout"),
        pytest.param(timedelta(seconds=70), False, id="past-its-timeout"),
    ],
)
def test_a_worker_is_live_within_its_timeout_on_the_database_clock(
    engine: Engine, ago: timedelta, live: bool
) -> None:
    Worker(engine, ["l2_wiring"], host="h:1:e").claim()
    age(engine, workers_table, beat_at=ago)
    found = workers(engine)["h:1:e"]
    assert found.live is live
    assert serves([found], "l2_wiring", None) is live
    assert not serves([found], "l2_wiring", "node-1")
    assert not serves([found], "dhcp", None)


def test_the_reaper_beats_and_purges_the_workers_gone(engine: Engine) -> None:
    Worker(engine, ["l2_wiring"], host="h:1:gone").claim()
    Worker(engine, ["l2_wiring"], host="h:1:live").claim()
    age(engine, workers_table, workers_table.c.id == "h:1:gone", beat_at=timedelta(minutes=2))
    reap(engine, settings=Settings(reap_every=timedelta(seconds=10)))
    found = workers(engine)
    me = f"{socket.gethostname()}:{os.getpid()}:reaper"
    assert set(found) == {"h:1:live", me}
    assert found[me].kind == "reaper" and found[me].timeout == 21 and found[me].names == ()


def test_a_purged_worker_announces_itself_again(engine: Engine) -> None:
    with engine.begin() as conn:
        beat(conn, Announcement("h:1:f", "celery", ["a"], ["q"], 30))
        conn.execute(workers_table.delete())
        beat(conn, Announcement("h:1:f", "celery", ["a", "b"], ["q"], 30))
    assert workers(engine)["h:1:f"].names == ("a", "b")


def test_an_unknown_kind_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="kind must be one of"), engine.begin() as conn:
        beat(conn, Announcement("h:1:g", "cron", [], [], 30))


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param(None, 60, id="default"),
        pytest.param("2m", 120, id="text"),
        pytest.param(timedelta(seconds=9), 9, id="timedelta"),
    ],
)
def test_the_toolkit_gives_its_workers_the_beat_timeout_setting(
    engine: Engine, value: object, seconds: int
) -> None:
    settings = Settings() if value is None else Settings(worker_beat_timeout=value)
    worker = Toolkit(engine, settings).worker(["l2_wiring"], host="h:1:s")
    worker.claim()
    assert worker.beat_timeout == seconds
    assert workers(engine)["h:1:s"].timeout == seconds


@pytest.mark.parametrize("value", ["1s", "2d", "soon"])
def test_a_beat_timeout_out_of_bounds_is_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match="worker_beat_timeout"):
        Settings(worker_beat_timeout=value)
