"""The shipped OpenAPI document: well-formed, and the app keeps to it (schemathesis, SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from webtest import TestApp

from tasktoolkit import orm
from tasktoolkit.endpoints import openapi_document
from tasktoolkit.endpoints._openapi import load_document
from tests.databases import engine_for
from tests.endpoints.conftest import Seeded, build_app, caller, seed_project
from tests.fuzzing import replayable

COLLECTIONS = ["clusters", "nodes"]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
OPERATIONS = [
    (path, method)
    for path, item in openapi_document(collections=COLLECTIONS)["paths"].items()
    for method in item
    if method in ("get", "post")
]


def test_shipped_document_is_openapi_3_1_with_every_endpoint() -> None:
    document = load_document()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/{collection}/{resource_id}/tasks",
        "/{collection}/{resource_id}/tasks/{task_id}",
        "/{collection}/{resource_id}/tasks/{task_id}/cancel",
        "/tasks",
        "/tasks/{task_id}",
        "/operations",
        "/operations/{operation_id}",
        "/operations/{operation_id}/cancel",
    }
    expanded = openapi_document(collections=["ports"], path_prefix="/v2.0")
    assert "/v2.0/ports/{resource_id}/tasks/{task_id}/cancel" in expanded["paths"]
    assert "/v2.0/operations" in expanded["paths"]
    assert not any("{collection}" in p for p in expanded["paths"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestApp, Seeded]]:
    """A SQLite database with two projects' records, and the endpoints over it."""
    path = Path(tmp_path_factory.mktemp("openapi")) / "schemathesis.db"
    engine = engine_for(make_url(f"sqlite:///{path}"))
    orm.create_all(engine)
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session:
        seeded = seed_project(session, "project-a")
        seed_project(session, "project-b")
    # Waits answer at once here: their conformance is the same, and examples stay quick.
    yield build_app(factory, max_wait=0), seeded
    orm.drop_all(engine)
    engine.dispose()


@pytest.mark.parametrize(
    ("path", "method"), [pytest.param(p, m, id=f"{m.upper()} {p}") for p, m in OPERATIONS]
)
def test_app_keeps_to_the_document(stack: tuple[TestApp, Seeded], path: str, method: str) -> None:
    app, seeded = stack
    schema = schemathesis.openapi.from_dict(openapi_document(collections=COLLECTIONS))
    operation = schema[path][method]
    known: dict[str, Any] = {"resource_id": seeded.cluster_id, "task_id": seeded.pending_id}
    if path.startswith("/nodes"):
        known = {"resource_id": str(seeded.node_id), "task_id": seeded.task_ids[4]}
    if path.startswith("/operations/"):
        known = {"operation_id": seeded.operation_id}
    params = {p["name"] for p in _path_parameters(schema.raw_schema, path)}
    cases = st.one_of(
        operation.as_strategy(),
        operation.as_strategy(path_parameters={k: v for k, v in known.items() if k in params}),
    )
    callers = st.sampled_from([caller("project-a"), caller("ops", admin=True), caller("b")])

    @replayable(40)
    @given(case=cases, headers=callers)
    def check(case: Any, headers: dict[str, str]) -> None:
        case.call_and_validate(app=app.app, headers=headers, checks=CHECKS)

    check()


def _path_parameters(document: dict[str, Any], path: str) -> list[dict[str, Any]]:
    item = document["paths"][path]
    found = []
    for parameter in item.get("parameters", []):
        if "$ref" in parameter:
            parameter = document["components"]["parameters"][parameter["$ref"].rsplit("/", 1)[1]]
        if parameter["in"] == "path":
            found.append(parameter)
    return found


def test_document_matches_what_the_app_mounts(session_factory: sessionmaker[Session]) -> None:
    app = build_app(session_factory, path_prefix="/v2.0")
    # The pages' stylesheet and script are no part of the API.
    routes = app.app.mapper.matchlist
    mounted = {r.routepath for r in routes if r.name and r.name != "tasktoolkit.page_assets"}
    documented = set(openapi_document(collections=COLLECTIONS, path_prefix="/v2.0")["paths"])
    assert mounted == documented
