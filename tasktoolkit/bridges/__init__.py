"""Queue bridges: the toolkit's tasks run on an existing task queue.

One base, :class:`Bridge`, holds what every queue shares: a task is published
once the transaction that made it pending commits, a sweeper publishes what
was left unpublished or not started in time, a delivery starts its task with
the toolkit's compare-and-set (a second delivery runs nothing), the handler
runs as a :class:`~tasktoolkit.orm.Job` with background heartbeats, and each
worker process has its own worker identity. A backend is a small subclass
that sends messages, stops a running handler and declares a handler's
consumer (:class:`tasktoolkit.celery.CeleryBridge` is one).

Which bridge runs a task is chosen per task name: each bridge binds its names
on its toolkit's engine, so several bridges, and database workers for the
names no bridge binds, share one database.
"""

from __future__ import annotations

from tasktoolkit.bridges._base import Bridge, Handler, Message
from tasktoolkit.bridges._delivery import RAN, SKIPPED, UNAVAILABLE, UNKNOWN, Outcome

__all__ = ["RAN", "SKIPPED", "UNAVAILABLE", "UNKNOWN", "Bridge", "Handler", "Message", "Outcome"]
