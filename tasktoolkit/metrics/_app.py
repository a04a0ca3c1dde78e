"""Serving the metrics: a WSGI app for the host's server, or a port of a worker's own."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, make_wsgi_app, start_wsgi_server
from prometheus_client.multiprocess import MultiProcessCollector

from tasktoolkit.errors import ConfigurationError
from tasktoolkit.metrics._database import DatabaseCollector
from tasktoolkit.metrics._hook import Metrics

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from _typeshed.wsgi import WSGIApplication

    from tasktoolkit.toolkit import Toolkit

__all__ = ["MULTIPROC_DIR", "metrics_app", "metrics_registry", "serve_metrics"]

#: The variable that turns on ``prometheus_client``'s multiprocess mode: each
#: process writes its counts to files there and a scrape sums them all.
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def metrics_registry(toolkit: Toolkit, *, database: bool = True) -> CollectorRegistry:
    """What a scrape of ``toolkit`` reads: its :class:`Metrics` hook's counts (every
    process's, in multiprocess mode) and, with ``database``, the database gauges.

    :raises ConfigurationError: the toolkit's hooks have no :class:`Metrics`.
    """
    hooks = [hook for hook in toolkit.settings.hooks if isinstance(hook, Metrics)]
    if not hooks:
        raise ConfigurationError(
            "the toolkit counts nothing: add tasktoolkit.metrics.Metrics() to Settings(hooks=...)"
        )
    registry = CollectorRegistry()
    if database:  # first: a scrape that finds the database away counts it in the same scrape
        registry.register(
            DatabaseCollector(toolkit.engine, seconds=toolkit.settings.deadline_seconds)
        )
    if os.environ.get(MULTIPROC_DIR):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(hooks[0].registry)
    return registry


def metrics_app(toolkit: Toolkit, *, database: bool = True) -> WSGIApplication:
    """A WSGI app answering every GET with the toolkit's metrics (Prometheus's text format,
    or OpenMetrics when asked), for the host to mount at ``/metrics``.

    :param database: serve the gauges read from the database too (every process
        that serves them reads the same rows: aggregate them with ``max``).

    Example::

        app = DispatcherMiddleware(toolkit.wsgi(api), {"/metrics": metrics_app(toolkit)})
    """
    app: WSGIApplication = make_wsgi_app(metrics_registry(toolkit, database=database))
    return app


def serve_metrics(
    toolkit: Toolkit, port: int, *, addr: str = "127.0.0.1", database: bool = True
) -> WSGIServer:
    """Serve the toolkit's metrics on ``addr:port`` from a daemon thread (a worker
    process's own endpoint); ``shutdown()`` the server returned to stop it.

    :param port: ``0`` picks a free port (``server.server_port`` tells which).
    """
    server, _ = start_wsgi_server(port, addr, metrics_registry(toolkit, database=database))
    return server
