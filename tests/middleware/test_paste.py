"""Paste: the entry points resolve, and a real api-paste.ini pipeline loads and serves."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import webtest
from paste.deploy import loadapp
from sqlalchemy.engine import Engine

from tasktoolkit.caller import keystone_caller
from tasktoolkit.context import is_valid_request_id
from tasktoolkit.middleware import OperationMiddleware, RequestIdMiddleware
from tasktoolkit.orm import Operation

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
header = X-OpenStack-Request-ID
compat_headers = X-Request-Id, X-Compute-Request-Id
caller_getter = tasktoolkit.caller:keystone_caller

[filter:operations]
use = egg:tasktoolkit#operations
db_url = {db_url}
methods = POST, put DELETE
exclude_paths = /healthcheck
ttl = 3600
durable = yes
request_timeout = 120
sqlalchemy.pool_size = 3

[app:cluster]
paste.app_factory = tests.middleware.apps:app_factory
db_url = {db_url}
"""


def test_api_paste_ini_pipeline_loads_and_serves(
    engine: Engine, tmp_path: Path, operation: OperationGetter
) -> None:
    db_url = engine.url.render_as_string(hide_password=False)
    ini = tmp_path / "api-paste.ini"
    ini.write_text(PIPELINE.format(db_url=db_url))
    pipeline = loadapp(f"config:{ini}")
    request_id: RequestIdMiddleware = pipeline
    operations: OperationMiddleware = pipeline.app
    try:
        assert isinstance(request_id, RequestIdMiddleware)
        assert request_id.header == "X-OpenStack-Request-ID"
        assert request_id.compat_headers == ("X-Request-Id", "X-Compute-Request-Id")
        assert request_id.caller_getter is keystone_caller
        assert isinstance(operations, OperationMiddleware)
        assert operations.methods == {"POST", "PUT", "DELETE"}
        assert operations.exclude_paths == ("/healthcheck",)
        assert operations.ttl == timedelta(hours=1)
        assert operations.durable is True
        assert operations.request_timeout == timedelta(minutes=2)
        assert operations.engine.pool.size() == 3  # type: ignore[attr-defined]

        app = webtest.TestApp(pipeline, lint=True)
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
        operations.engine.dispose()
        operations.app.engine.dispose()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({}, "set db_url", id="no-database"),
        pytest.param({"db_url": "sqlite://", "durable": "maybe"}, "durable", id="bad-bool"),
        pytest.param({"db_url": "sqlite://", "deadline": "soon"}, "deadline", id="bad-deadline"),
        pytest.param({"db_url": "sqlite://", "ttl": "a day"}, "ttl", id="bad-ttl"),
        pytest.param(
            {"db_url": "sqlite://", "request_timeout": "0"}, "request_timeout", id="zero-timeout"
        ),
        pytest.param({"db_url": "sqlite://", "colour": "red"}, "unknown option", id="unknown"),
        pytest.param(
            {"db_url": "sqlite://", "caller_getter": "no.such.module:f"},
            "cannot import",
            id="getter-missing",
        ),
        pytest.param(
            {"db_url": "sqlite://", "caller_getter": "keystone_caller"},
            "package.module:attribute",
            id="getter-not-dotted",
        ),
    ],
)
def test_operations_factory_rejects_bad_options(options: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OperationMiddleware.factory({}, **options)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "1e9"])
def test_operations_filter_refuses_a_deadline_out_of_range(value: str) -> None:
    make = OperationMiddleware.factory({}, db_url="sqlite://", deadline=value)
    with pytest.raises(ValueError, match="deadline must be more than 0"):
        make(lambda environ, start_response: [])


def test_operations_factory_accepts_sqlalchemy_url_and_none_ttl() -> None:
    make = OperationMiddleware.factory(
        {"db_url": "ignored: global_conf is never read"},
        **{"sqlalchemy.url": "sqlite://", "ttl": "none", "durable": "TRUE", "deadline": "2.5"},
    )
    middleware = make(lambda environ, start_response: [])
    try:
        assert middleware.ttl is None and middleware.durable is True
        assert middleware.deadline == 2.5
        assert middleware.engine.dialect.name == "sqlite"
    finally:
        middleware.close()
        middleware.engine.dispose()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param({"caller_getter": "none"}, None, id="no-getter"),
        pytest.param({"compat_headers": ""}, (), id="empty-compat"),
    ],
)
def test_request_id_factory_coerces(options: dict[str, str], expected: Any) -> None:
    middleware = RequestIdMiddleware.factory({}, **options)(lambda environ, start_response: [])
    key = next(iter(options))
    assert getattr(middleware, key) == expected


def test_request_id_factory_rejects_unknown_options() -> None:
    with pytest.raises(ValueError, match="unknown option 'headers'"):
        RequestIdMiddleware.factory({}, headers="X-Id")
