"""The one rule for "the database is unavailable", as SQLAlchemy and oslo.db raise it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import routes
from oslo_db import exception as oslo_exc
from oslo_db.sqlalchemy import engines as oslo_engines
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, TimeoutError
from sqlalchemy.orm import sessionmaker
from webob import Request

from tasktoolkit import Settings
from tasktoolkit.endpoints import Router, mount
from tasktoolkit.errors import database_unavailable
from tests.models import Cluster


class _Orig(Exception):
    pass


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        pytest.param(OperationalError("SELECT 1", {}, _Orig("refused")), True, id="operational"),
        pytest.param(TimeoutError("pool exhausted"), True, id="pool-timeout"),
        pytest.param(
            oslo_exc.DBConnectionError(OperationalError("SELECT 1", {}, _Orig("lost"))),
            True,
            id="oslo-connection-error",
        ),
        pytest.param(IntegrityError("INSERT", {}, _Orig("dup")), False, id="constraint"),
        pytest.param(oslo_exc.DBDuplicateEntry(), False, id="oslo-duplicate"),
        pytest.param(ValueError("bug"), False, id="not-the-database"),
    ],
)
def test_what_means_the_database_is_unavailable(error: BaseException, unavailable: bool) -> None:
    assert database_unavailable(error) is unavailable


@pytest.mark.parametrize(
    "make_engine",
    [
        pytest.param(create_engine, id="sqlalchemy"),
        pytest.param(lambda url: oslo_engines.create_engine(url, max_retries=0), id="oslo-db"),
    ],
)
def test_unreachable_database_is_a_503_with_retry_after(
    make_engine: Callable[[str], Engine],
) -> None:
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    mapper = routes.Mapper()
    mount(
        mapper,
        collections={"clusters": Cluster},
        session_factory=sessionmaker(engine),
        settings=Settings(),
    )
    response = Request.blank("/tasks", headers={"X-Project-Id": "a"}).get_response(Router(mapper))
    assert response.status_int == 503
    assert response.headers["Retry-After"] == "5"  # the toolkit's one Retry-After policy
    assert response.json["errors"][0]["code"] == "tasktoolkit.database_unavailable"
    engine.dispose()
