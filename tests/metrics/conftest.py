"""Fixtures for the metrics tests: a toolkit counting with :class:`Metrics`, and its scrape."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from prometheus_client import generate_latest
from sqlalchemy.engine import Engine

from tasktoolkit import Settings, Toolkit
from tasktoolkit.metrics import Metrics, metrics_registry
from tests.metrics.scrapes import Scrape, parse
from tests.orm.conftest import cluster, in_operation, in_request, make_node, node, open_op

__all__ = ["cluster", "in_operation", "in_request", "make_node", "node", "open_op"]


@pytest.fixture
def toolkit(engine: Engine) -> Iterator[Toolkit]:
    """A toolkit on the test module's database whose hooks count with :class:`Metrics`."""
    toolkit = Toolkit(engine, Settings(hooks=[Metrics()]))
    yield toolkit
    toolkit.close()


@pytest.fixture
def scrape(toolkit: Toolkit) -> Callable[[], Scrape]:
    """``scrape()``: the toolkit's metrics as Prometheus reads them now (no cache)."""

    def read() -> Scrape:
        return parse(generate_latest(metrics_registry(toolkit)).decode())

    return read
