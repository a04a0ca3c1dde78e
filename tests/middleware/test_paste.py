"""Paste: the entry points resolve, and a real api-paste.ini pipeline loads and serves."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from paste.deploy import loadapp
from sqlalchemy.engine import Engine

from tasktoolkit import Settings, Toolkit
from tasktoolkit.caller import keystone_caller
from tasktoolkit.context import is_valid_request_id
from tasktoolkit.errors import ConfigurationError
from tasktoolkit.middleware import OperationMiddleware, RequestIdMiddleware
from tasktoolkit.orm import Operation
from tests.middleware import apps
from tests.middleware.stacks import FlushingTestApp

OperationGetter = Callable[[str], Operation | None]


def test_entry_points_resolve() -> None:
    # oslo.middleware registers a "request_id" too: look at ours only
    found = {
        ep.name: ep
        for ep in entry_points(group="paste.filter_factory")
        if ep.dist is not None and ep.dist.name == "tasktoolkit"
    }
    assert found["request_id"].load() == RequestIdMiddleware.factory
    assert found["operations"].load() == OperationMiddleware.factory


PIPELINE = """
[pipeline:main]
pipeline = request_id operations cluster

[filter:request_id]
use = egg:tasktoolkit#request_id
toolkit = tests.middleware.apps:TOOLKIT
compat_headers = X-Request-Id, X-Compute-Request-Id

[filter:operations]
use = egg:tasktoolkit#operations
toolkit = tests.middleware.apps:TOOLKIT
methods = POST, put DELETE
exclude_paths = /healthcheck
operation_ttl = 1h
durable = yes
request_timeout = 2m

[app:cluster]
paste.app_factory = tests.middleware.apps:app_factory
"""


@pytest.fixture
def host_toolkit(engine: Engine) -> Iterator[Toolkit]:
    """The host's Toolkit, as a paste pipeline names it (``tests.middleware.apps:TOOLKIT``)."""
    toolkit = Toolkit(engine, Settings(request_id_header="X-OpenStack-Request-ID"))
    apps.TOOLKIT = toolkit
    yield toolkit
    apps.TOOLKIT = None
    toolkit.close()


def test_api_paste_ini_pipeline_uses_the_hosts_toolkit(
    host_toolkit: Toolkit, tmp_path: Path, operation: OperationGetter
) -> None:
    ini = tmp_path / "api-paste.ini"
    ini.write_text(PIPELINE)
    pipeline = loadapp(f"config:{ini}")
    request_id: RequestIdMiddleware = pipeline
    operations: OperationMiddleware = pipeline.app
    try:
        assert isinstance(request_id, RequestIdMiddleware)
        # the toolkit's settings, with the filter's options over them
        assert request_id.header == "X-OpenStack-Request-ID"
        assert request_id.compat_headers == ("X-Request-Id", "X-Compute-Request-Id")
        assert request_id.caller_getter is keystone_caller
        assert isinstance(operations, OperationMiddleware)
        assert operations.engine is host_toolkit.engine  # its pool: no second engine
        settings = operations.settings
        assert operations.methods == {"POST", "PUT", "DELETE"}
        assert settings.exclude_paths == ("/healthcheck",)
        assert settings.operation_ttl == timedelta(hours=1)
        assert settings.durable is True
        assert settings.request_timeout == timedelta(minutes=2)
        assert settings.request_id_header == "X-OpenStack-Request-ID"

        app = FlushingTestApp(pipeline, lint=True)
        response = app.post("/clusters", headers={"X-Project-Id": "p1"}, status=201)
        rid = response.headers["X-OpenStack-Request-ID"]
        assert is_valid_request_id(rid)
        assert response.headers["X-Request-Id"] == response.headers["X-Compute-Request-Id"] == rid
        assert response.headers["Operation-Location"].endswith(f"/operations/{rid}")
        op = operation(rid)
        assert op is not None and (op.project_id, op.ttl_seconds) == ("p1", 3600)
        assert op.request_deadline is None  # the request ended: no deadline left
        assert app.post("/healthcheck").json["operation_id"] is None
        assert app.patch("/clusters/1").json["operation_id"] is None  # PATCH not configured
    finally:
        operations.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({}, "set toolkit = package.module:attribute", id="no-toolkit"),
        pytest.param(
            {"toolkit": "tests.middleware.apps:cluster_app"},
            "not a tasktoolkit.Toolkit",
            id="not-a-toolkit",
        ),
        pytest.param({"toolkit": "no.such.module:toolkit"}, "cannot import", id="toolkit-missing"),
        pytest.param(
            {"db_url": "sqlite://"}, "unknown option 'db_url'", id="no-url-in-the-pipeline"
        ),
        pytest.param({"durable": "maybe"}, "durable", id="bad-bool"),
        pytest.param({"deadline": "soon"}, "deadline", id="bad-deadline"),
        pytest.param({"deadline": "0"}, "deadline", id="deadline-zero"),
        pytest.param({"operation_ttl": "a day"}, "operation_ttl", id="bad-ttl"),
        pytest.param({"request_timeout": "0"}, "request_timeout", id="zero-timeout"),
        pytest.param({"colour": "red"}, "unknown option 'colour'", id="unknown"),
        pytest.param({"caller_getter": "no.such.module:f"}, "cannot import", id="getter-missing"),
        pytest.param(
            {"caller_getter": "keystone_caller"},
            "package.module:attribute",
            id="getter-not-dotted",
        ),
    ],
)
def test_operations_factory_rejects_bad_options(
    host_toolkit: Toolkit, options: dict[str, str], message: str
) -> None:
    if options and "toolkit" not in options:
        options = {"toolkit": "tests.middleware.apps:TOOLKIT", **options}
    with pytest.raises(ConfigurationError, match=message):
        OperationMiddleware.factory({}, **options)


@pytest.mark.parametrize(
    ("options", "attribute", "expected"),
    [
        pytest.param({"compat_headers": ""}, "compat_headers", (), id="empty-compat"),
        pytest.param(
            {"request_id_header": "X-OpenStack-Request-ID"},
            "header",
            "X-OpenStack-Request-ID",
            id="header",
        ),
    ],
)
def test_request_id_factory_reads_the_settings_options(
    options: dict[str, str], attribute: str, expected: Any
) -> None:
    middleware = RequestIdMiddleware.factory({}, **options)(lambda environ, start_response: [])
    assert getattr(middleware, attribute) == expected


def test_request_id_factory_rejects_unknown_options() -> None:
    with pytest.raises(ConfigurationError, match="unknown option 'header'"):
        RequestIdMiddleware.factory({}, header="X-Id")
