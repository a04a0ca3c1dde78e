"""Fixtures for the oslo bridges: oslo.log's ContextFormatter on a captured handler."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator

import pytest
from oslo_config import cfg
from oslo_context import context as oslo_context
from oslo_log import formatters
from oslo_log import log as oslo_log

from tasktoolkit.oslo import OsloContextFilter
from tests.endpoints.conftest import projects  # noqa: F401  (two projects' records, for the policy)

#: What each captured line looks like: level, logger, [global id, request id, user, project].
CONTEXT_FORMAT = (
    "%(levelname)s %(name)s [%(global_request_id)s %(request_id)s %(user_identity)s] %(message)s"
)


@pytest.fixture
def clean_oslo_store() -> Iterator[None]:
    """oslo.context's thread-local store, emptied before and after the test."""
    store = oslo_context._request_store  # no public way to empty it
    store.__dict__.pop("context", None)
    yield
    store.__dict__.pop("context", None)


def _capture() -> tuple[logging.Handler, io.StringIO]:
    conf = cfg.ConfigOpts()
    oslo_log.register_options(conf)
    conf([], project="tasktoolkit-tests")
    conf.set_override("logging_context_format_string", CONTEXT_FORMAT)
    conf.set_override("logging_default_format_string", "%(levelname)s %(name)s [-] %(message)s")
    conf.set_override("logging_user_identity_format", "%(user)s %(project)s")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatters.ContextFormatter(config=conf, project="tasktoolkit-tests"))
    handler.addFilter(OsloContextFilter())
    return handler, stream


@pytest.fixture
def oslo_lines(clean_oslo_store: None) -> Iterator[Callable[[], list[str]]]:
    """oslo.log's ContextFormatter on the root logger (DEBUG), with the toolkit's filter;
    the lines it wrote so far."""
    handler, stream = _capture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield lambda: stream.getvalue().splitlines()
    root.removeHandler(handler)
    root.setLevel(level)
