"""Run a module in a process whose wall clock libfaketime fakes.

``LD_PRELOAD=.../libfaketime.so.1 FAKETIME=OFFSET FAKETIME_DONT_FAKE_MONOTONIC=1
python -m tests.faked_clock MODULE [ARG ...]``: the process reads a wall clock
``OFFSET`` off (``-10m``, ``+2h``), and measures durations right.

libfaketime 0.9.10 (Debian 12) fails ``clock_nanosleep`` on an absolute
monotonic deadline with ``EINVAL`` when it leaves the monotonic clock alone,
and Python's ``time.sleep`` sleeps that way; when it fakes the monotonic
clock instead, a thread's timed wait never ends. So the monotonic clock is
left alone and ``time.sleep`` waits on an event, whose timeout works.
"""

from __future__ import annotations

import runpy
import sys
import threading
import time


def _sleep(seconds: float) -> None:
    threading.Event().wait(seconds)


if __name__ == "__main__":
    time.sleep = _sleep
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
