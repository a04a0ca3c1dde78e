"""Query parsing and mounting, as units (no database)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import routes
from sqlalchemy.orm import sessionmaker
from webob import Request

from tasktoolkit import Settings
from tasktoolkit.endpoints import Router, mount
from tasktoolkit.endpoints._params import OPERATION_LIST, TASK_LIST, ListKind, parse_list_query
from tasktoolkit.errors import InvalidFilterError
from tasktoolkit.orm import ListParams
from tests.models import Base, Cluster, Node

TASK_LIST_QUERIES = [
    pytest.param("", ListParams(), id="defaults"),
    pytest.param("state=active", ListParams(states=("pending", "running")), id="active"),
    pytest.param(
        "state=failed,running&state=active",
        ListParams(states=("failed", "running", "pending")),
        id="comma-repeat-dedupe",
    ),
    pytest.param(
        "state=failed%2C%20cancelled",
        ListParams(states=("failed", "cancelled")),
        id="spaces-after-commas",
    ),
    pytest.param("limit=7", ListParams(limit=7), id="limit"),
    pytest.param("limit=1001", ListParams(limit=1000), id="limit-clamped"),
    pytest.param("limit=" + "0" * 20 + "7", ListParams(limit=7), id="limit-leading-zeros"),
    pytest.param("limit=" + "9" * 5000, ListParams(limit=1000), id="limit-huge-clamped"),
    pytest.param(
        "changes-since=2026-01-31T13:00:00%2B01:00",
        ListParams(changes_since=datetime(2026, 1, 31, 12, tzinfo=UTC)),
        id="offset-to-utc",
    ),
    pytest.param(
        "changes-since=2026-01-31T13:00:00+01:00",
        ListParams(changes_since=datetime(2026, 1, 31, 12, tzinfo=UTC)),
        id="unencoded-plus",
    ),
    pytest.param(
        "changes-before=2026-01-31",
        ListParams(changes_before=datetime(2026, 1, 31, tzinfo=UTC)),
        id="naive-date-is-utc",
    ),
    pytest.param(
        "sort_key=finished_at&sort_dir=asc",
        ListParams(sort_key="finished_at", sort_dir="asc"),
        id="sort",
    ),
    pytest.param(
        "resource_type=node&resource_id=42",
        ListParams(resource_type="node", resource_id="42"),
        id="resource",
    ),
]
OPERATION_LIST_QUERIES = [
    pytest.param("action=create", ListParams(action="create"), id="action"),
    pytest.param("method=delete", ListParams(method="DELETE"), id="method-upper-cased"),
    pytest.param(
        "resource_type=port&resource_id=p-1",
        ListParams(resource_type="port", resource_id="p-1"),
        id="any-resource-type",
    ),
]


@pytest.mark.parametrize(
    ("route", "query", "expected"),
    [
        pytest.param(route, *case.values, id=f"{name}-{case.id}")
        for name, route, cases in (
            ("tasks", TASK_LIST, TASK_LIST_QUERIES),
            ("operations", OPERATION_LIST, OPERATION_LIST_QUERIES),
        )
        for case in cases
    ],
)
def test_list_queries(route: ListKind, query: str, expected: ListParams) -> None:
    assert parse_list_query(query, route)[0] == expected


def test_pairs_keep_order_and_repeats_for_next_links() -> None:
    _, pairs = parse_list_query("state=failed&limit=5&state=running", TASK_LIST)
    assert pairs == [("state", "failed"), ("limit", "5"), ("state", "running")]


@pytest.mark.parametrize("query", ["action=create", "method=POST"])
def test_tasks_are_not_filtered_by_route(query: str) -> None:
    with pytest.raises(InvalidFilterError, match="unknown parameter"):
        parse_list_query(query, TASK_LIST)


def test_operation_states_and_active() -> None:
    assert parse_list_query("state=active", OPERATION_LIST)[0].states == ("running",)
    with pytest.raises(InvalidFilterError, match="pending"):
        parse_list_query("state=pending", OPERATION_LIST)


def test_long_values_are_cut_in_errors() -> None:
    with pytest.raises(InvalidFilterError) as raised:
        parse_list_query("name=" + "%27" * 5000, TASK_LIST)
    assert len(str(raised.value)) < 200


@pytest.mark.parametrize(
    ("options", "error"),
    [
        pytest.param({"collections": {"tasks": Cluster}}, ValueError, id="reserved-name"),
        pytest.param({"collections": {"a/b": Cluster}}, ValueError, id="slash-in-name"),
        pytest.param({"collections": {"bases": Base}}, TypeError, id="not-a-resource"),
        pytest.param({"session_factory": None}, TypeError, id="no-session-factory"),
        pytest.param({"settings": {"path_prefix": "/v2.0"}}, TypeError, id="not-settings"),
    ],
)
def test_mount_refuses_bad_configuration(options: dict[str, Any], error: type[Exception]) -> None:
    arguments: dict[str, Any] = {
        "collections": {"clusters": Cluster, "nodes": Node},
        "session_factory": sessionmaker(),
        "settings": Settings(),
        **options,
    }
    with pytest.raises(error):
        mount(routes.Mapper(), **arguments)


def test_unrouted_paths_are_404_in_the_error_format() -> None:
    mapper = routes.Mapper()
    mount(
        mapper,
        collections={"clusters": Cluster},
        session_factory=sessionmaker(),
        settings=Settings(),
    )
    response = Request.blank("/nothing/here").get_response(Router(mapper))
    assert response.status_int == 404
    assert response.json["errors"][0]["status"] == 404
