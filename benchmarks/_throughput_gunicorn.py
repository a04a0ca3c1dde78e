"""gunicorn's configuration for ``post_throughput``: its worker-exit hook (the app is not
imported in the arbiter)."""

from __future__ import annotations

from typing import Any


def worker_exit(server: Any, worker: Any) -> None:
    """Flush the worker's ends and write its writer's lags (see ``benchmarks._throughput_app``)."""
    from benchmarks._throughput_app import write_lags

    write_lags()
