"""What an outage writes to the log: one line when the database goes (saying how it is
tried again), one when it is back, never a line nor a traceback per try.

A private PostgreSQL or MariaDB server (never the shared test servers) is stopped
under the four parties that keep trying while it is away, each trying several
times a second, then started again:

- a worker looking for tasks (``Worker.claim``);
- the sample's reaper, a pass every 0.2 s (:class:`sample_app.agents.Agents`);
- the end writer of the operation middleware (``Hooks.unavailable("middleware.end")``);
- the notifications' sweep (:class:`tasktoolkit.oslo.Notifications`, a fake transport).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.engine import Engine

from sample_app.agents import Agents
from tasktoolkit._request_protocol import RequestEnd, Target
from tasktoolkit.hooks import Hooks
from tasktoolkit.middleware._ends import EndWriter
from tasktoolkit.orm import Worker
from tasktoolkit.oslo import Notifications
from tests.faults.servers import PrivateServer, wait_until
from tests.faults.test_worker_outages import engine, server  # noqa: F401

#: Seconds anything the test waits for may take.
DEADLINE = 60.0
#: How each party starts its lines.
PARTIES = {
    "worker": "worker outage-logs",
    "reaper": "reaper",
    "end writer": "middleware.end",
    "notifications": "notifications",
}
LOGGERS = ("tasktoolkit", "sample_app")
#: The tries each party makes in vain, at least, before the database is started again.
TRIES = 5


def _ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(LOGGERS)]


def _lines(caplog: pytest.LogCaptureFixture, what: str, says: str) -> list[logging.LogRecord]:
    return [r for r in _ours(caplog) if r.getMessage().startswith(f"{what}: {says}")]


@pytest.fixture
def trying(engine: Engine) -> Iterator[Callable[[], None]]:  # noqa: F811
    """The four parties trying the database in threads until the test ends."""
    stop = threading.Event()
    worker = Worker(engine, ["outage-logs"], host="outage-logs")
    writer = EndWriter(engine, durable=False, deadline=2.0, hooks=Hooks())
    notifications = Notifications(engine, url="fake://", deadline=2.0)
    agents = Agents(engine, count=0, reap_interval=0.2)

    def claims() -> None:
        while not stop.is_set():
            worker.claim(wait=0.2)

    def ends() -> None:
        while not stop.wait(0.1):
            writer.submit(RequestEnd("req-outage-logs", 200, Target(), None))
            writer.flush(DEADLINE)

    def sweeps() -> None:
        while not stop.wait(0.1):
            notifications.sweep()

    threads = [threading.Thread(target=run, daemon=True) for run in (claims, ends, sweeps)]
    for thread in threads:
        thread.start()
    agents.start()
    yield stop.set
    stop.set()
    worker.stop(0)
    agents.stop()
    for thread in threads:
        thread.join(DEADLINE)
    worker.close()
    writer.close()
    notifications.close()


def test_an_outage_is_one_line_when_the_database_goes_and_one_when_it_is_back(
    server: PrivateServer,  # noqa: F811
    trying: Callable[[], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    server.stop()
    stopped = time.monotonic()

    def each_tried_again() -> bool:
        # Each party said it once, then tried again and again (a line at DEBUG only).
        return all(
            len(_lines(caplog, what, "database still unavailable")) >= TRIES
            for what in PARTIES.values()
        )

    wait_until(each_tried_again, DEADLINE, "every party trying again")
    server.start()
    wait_until(
        lambda: all(_lines(caplog, what, "database back after") for what in PARTIES.values()),
        DEADLINE,
        "every party back",
    )
    trying()
    outage = time.monotonic() - stopped
    shown = [r for r in _ours(caplog) if r.levelno >= logging.INFO]
    for party, what in PARTIES.items():
        lost = [r for r in shown if r.getMessage().startswith(f"{what}: database unavailable")]
        back = [r for r in shown if r.getMessage().startswith(f"{what}: database back after")]
        assert len(lost) == 1 and len(back) == 1, (party, [r.getMessage() for r in shown])
        tries = re.search(r"\((\d+) tries failed\)$", back[0].getMessage())
        assert tries and int(tries.group(1)) > TRIES, back[0].getMessage()
        assert lost[0].levelno == back[0].levelno == logging.WARNING
    reaper = _lines(caplog, "reaper", "database unavailable")[0].getMessage()
    assert reaper.endswith("; trying again every 0.2 s")
    assert not [r.getMessage() for r in shown if r.exc_info], "no traceback but at DEBUG"
    assert not [r.getMessage() for r in shown if "Traceback" in r.getMessage()]
    print(f"\n{server.backend}: an outage of {outage:.1f} s logged {len(shown)} lines: ")
    for record in shown:
        print(f"  {record.name} {record.levelname} {record.getMessage()}")
