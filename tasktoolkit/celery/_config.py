"""What the bridge asks of Celery, so that a task is never run twice nor lost.

Who owns what:

- **The toolkit** owns the task: its state, attempts, retries with backoff,
  heartbeats, deadlines and cancellation. Starting a task is the
  compare-and-set of every other start, so a second delivery of its message
  starts nothing.
- **Celery** owns the message: it is acknowledged once the handler has
  returned (``acks_late``), put back when the worker process dies under it
  (``reject_on_worker_lost``: the next delivery finds the task started and
  skips it, or starts it if the process died before it could), and a worker
  reserves one message at a time (prefetch 1), so a message never waits
  behind a long task in a busy process. Celery's own retries are off: a
  retryable failure goes back to ``pending`` in the database, and the bridge
  publishes it again.
- **Celery's tools** are told what the toolkit recorded (its task state,
  events and result backend, when the app has one; see
  :mod:`tasktoolkit.celery._outcome`): results are not ignored, so that
  ``AsyncResult`` and Flower show a failed task as ``FAILURE``. A message that
  is lost (a broker without persistence restarted, a purged or deleted
  queue, a dead worker holding it reserved) is published again by the
  sweeper after the task's ``redeliver_after``.
"""

from __future__ import annotations

from typing import Any

from tasktoolkit.errors import InvalidBrokerError

__all__ = ["BROKER_SCHEMES", "TASK_OPTIONS", "broker_of", "check_broker_url", "configure"]

#: The brokers the bridge runs on: RabbitMQ (AMQP) and Redis.
BROKER_SCHEMES = frozenset({"amqp", "amqps", "pyamqp", "redis", "rediss", "sentinel"})

#: The options of every Celery task the bridge declares.
TASK_OPTIONS: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "acks_on_failure_or_timeout": True,
    "max_retries": 0,
    "typing": False,
}


def check_broker_url(url: object) -> str:
    """``url`` if every broker URL in it (``;``-separated fail-overs) is RabbitMQ's or Redis's.

    :raises InvalidBrokerError: an empty URL, or another scheme (``sqs://``, ``memory://``).
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidBrokerError(f"a broker URL is needed (amqp://... or redis://...), got {url!r}")
    for one in url.split(";"):
        scheme = one.strip().partition("://")[0].partition("+")[0].lower()
        if scheme not in BROKER_SCHEMES:
            raise InvalidBrokerError(
                f"broker URL {_hide_password(one)!r}: the Celery bridge runs on RabbitMQ or "
                f"Redis ({', '.join(sorted(BROKER_SCHEMES))}), not {scheme!r}"
            )
    return url


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.strip().partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url.strip()
    return f"{scheme}{sep}{credentials.partition(':')[0]}:***@{host}"


def broker_of(app: Any) -> str:
    """The broker URL a Celery app connects to (Celery's default when none is set)."""
    url = app.conf.broker_url or app.conf.broker_read_url or "amqp://guest@localhost//"
    return str(url)


def configure(app: Any) -> None:
    """Set what the bridge needs on a Celery app (checked broker, prefetch 1, confirms).

    :raises InvalidBrokerError: the app's broker is not RabbitMQ or Redis.
    """
    url = check_broker_url(broker_of(app))
    conf = app.conf
    conf.worker_prefetch_multiplier = 1
    conf.broker_connection_retry_on_startup = True
    if url.lower().startswith(("amqp", "pyamqp")):
        # Publisher confirms: a publish returns once RabbitMQ has the message,
        # so a task is marked published only when it really is.
        options = dict(conf.broker_transport_options or {})
        options.setdefault("confirm_publish", True)
        conf.broker_transport_options = options
