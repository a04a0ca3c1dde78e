"""Notifications as another service hears them: a real oslo.messaging notification listener
on a private RabbitMQ vhost (:func:`tests.brokers.private_broker`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import oslo_messaging
from oslo_config import cfg

from tests.brokers import private_broker

#: How long a test waits for a notification.
WAIT = 15.0


class Heard:
    """The notifications a listener received (its ``info`` endpoint), by operation id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: list[dict[str, Any]] = []

    def info(
        self,
        ctxt: dict[str, Any],
        publisher_id: str,
        event_type: str,
        payload: dict[str, Any],
        metadata: dict[str, Any],
    ) -> None:
        heard = {"ctxt": ctxt, "publisher_id": publisher_id, "event_type": event_type}
        with self._lock:
            self.messages.append({**heard, "payload": payload})

    def of(self, operation_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                m
                for m in self.messages
                if m["payload"]["tasktoolkit_object.data"]["id"] == operation_id
            ]

    def wait_for(self, operation_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while not (found := self.of(operation_id)):
            assert time.monotonic() < deadline, f"no notification of {operation_id}"
            time.sleep(0.02)
        return found[0]


@contextmanager
def rabbit_transport_url() -> Iterator[str]:
    """An oslo.messaging transport URL (``rabbit://``) on a vhost of this run's own."""
    with private_broker("rabbitmq") as url:
        yield "rabbit" + url[url.index("://") :]


@contextmanager
def listening(url: str, topic: str = "notifications") -> Iterator[Heard]:
    """A notification listener on ``topic`` at ``url``, for the block."""
    conf = cfg.ConfigOpts()
    conf([], default_config_files=[])
    heard = Heard()
    transport = oslo_messaging.get_notification_transport(conf, url=url)
    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=topic)], [heard], executor="threading"
    )
    listener.start()
    try:
        yield heard
    finally:
        listener.stop()
        listener.wait()
        transport.cleanup()
