"""The process's LISTEN connection while its database goes away and comes back."""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy.engine import Engine

from tasktoolkit.orm._listening import Listener, waiter_for
from tests.orm.test_processes import wait_for
from tests.proxy import TcpProxy


def test_the_listen_connection_says_once_it_is_lost_and_once_it_is_back(
    backend: str, proxied: tuple[TcpProxy, Engine], caplog: pytest.LogCaptureFixture
) -> None:
    if backend != "postgresql":
        pytest.skip("only PostgreSQL listens")
    proxy, through = proxied
    listener = waiter_for(through)
    assert isinstance(listener, Listener)
    try:
        wait_for(lambda: listener.healthy, "the listener connected")
        with caplog.at_level(logging.DEBUG, "tasktoolkit.orm"):
            proxy.cut()
            wait_for(lambda: not listener.healthy, "the listener lost its connection")
            time.sleep(3)  # the outage itself (the scenario, not a wait for something)
            proxy.restore()
            wait_for(lambda: listener.healthy, "the listener connected again")
    finally:
        listener.close()
    records = [r for r in caplog.records if r.name == "tasktoolkit.orm"]
    lines = [r for r in records if r.levelno >= logging.WARNING]
    assert not any(r.exc_info for r in lines)  # no traceback
    lost, back = (r.getMessage() for r in lines)
    assert "LISTEN connection: database unavailable" in lost and "waiters poll" in lost
    assert "LISTEN connection: database back after" in back
    assert len(records) - len(lines) >= 3  # the tries between, at debug level only
