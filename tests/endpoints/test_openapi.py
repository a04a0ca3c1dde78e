"""The OpenAPI document: its paths are the endpoint table's, and the served endpoints keep to it.

Schemathesis runs every check (``--checks all``: no 5xx, statuses, content
types, headers and bodies as documented, valid data accepted, invalid data
refused, ...) with positive and negative data, as a project member and as an
admin, on SQLite, PostgreSQL and MariaDB, against the document the endpoints
serve behind the toolkit's middlewares. Only the rules across parameters that
no document can state are left out (``tests.fuzzing.CROSS_PARAMETER_RULES``):
``changes-before`` earlier than ``changes-since`` and a marker of no record of
the list are 400s tested in ``test_params.py`` and ``test_endpoints.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import routes
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import Settings, Toolkit, orm
from tasktoolkit.endpoints import ENDPOINTS, Router, openapi_document
from tasktoolkit.endpoints._openapi import load_parts
from tests.databases import engine_for, private_database
from tests.endpoints.conftest import COLLECTIONS, build_app, caller, seed_project
from tests.fuzzing import CROSS_PARAMETER_RULES, aimed, fuzzed, replayable

CALLERS = {
    "member": {**caller("project-a"), "X-Roles": "member,reader"},
    "admin": caller("ops", admin=True),
}


def test_the_shipped_parts_are_openapi_3_1_without_paths() -> None:
    parts = load_parts()
    assert parts["openapi"].startswith("3.1")
    assert "paths" not in parts  # the endpoint table's


def test_the_documents_paths_are_the_tables() -> None:
    documented = {
        (path, method.upper())
        for path, item in openapi_document()["paths"].items()
        for method in item
        if method != "parameters"
    }
    declared = {
        (e.path, m) for e in ENDPOINTS if e.described is not None for m in e.methods if m != "HEAD"
    }
    assert documented == declared
    expanded = openapi_document(collections=["ports"], path_prefix="/v2.0")
    assert "/v2.0/ports/{resource_id}/tasks/{task_id}/cancel" in expanded["paths"]
    assert "/v2.0/operations" in expanded["paths"]
    assert not any("{collection}" in p for p in expanded["paths"])


def test_document_matches_what_the_app_mounts(session_factory: sessionmaker[Session]) -> None:
    app = build_app(session_factory, path_prefix="/v2.0")
    # The pages' stylesheet and script are no part of the API.
    routes = app.app.mapper.matchlist
    mounted = {r.routepath for r in routes if r.name and r.name != "tasktoolkit.page_assets"}
    documented = set(openapi_document(collections=COLLECTIONS, path_prefix="/v2.0")["paths"])
    assert mounted == documented


class Stack:
    """The endpoints served with their document, behind the middlewares, on one database
    whose two projects have records; ids of project-a's to aim at."""

    def __init__(self, engine: Engine) -> None:
        # Waits answer at once here: their conformance is the same, and examples stay quick.
        self.toolkit = Toolkit(engine, Settings(serve_openapi=True, max_wait=0))
        mapper = routes.Mapper()
        self.endpoints = self.toolkit.mount(mapper, collections=COLLECTIONS)
        self.app = self.toolkit.wsgi(Router(mapper))
        with self.toolkit.sessions() as session:
            seeded = seed_project(session, "project-a")
            seed_project(session, "project-b")
        self.known = {
            "/clusters": {"resource_id": seeded.cluster_id, "task_id": seeded.pending_id},
            "/nodes": {"resource_id": str(seeded.node_id), "task_id": seeded.task_ids[4]},
            "/tasks": {"task_id": seeded.running_id},
            "/operations": {"operation_id": seeded.operation_id},
            "/workers": {},
        }
        self.schema = schemathesis.openapi.from_wsgi("/openapi.json", self.app)


@pytest.fixture(scope="module")
def stack(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack on a database of its own on ``backend``."""
    with private_database(backend, Path(tmp_path_factory.mktemp("openapi"))) as url:
        engine = engine_for(url)
        orm.create_all(engine)
        made = Stack(engine)
        yield made
        made.app.app.close()  # type: ignore[attr-defined]  (the operation middleware)
        made.endpoints.close()
        orm.drop_all(engine)
        engine.dispose()


OPERATIONS = [
    (path, method)
    for path, item in openapi_document(collections=COLLECTIONS)["paths"].items()
    for method in item
    if method in ("get", "post")
]


@pytest.mark.parametrize("who", list(CALLERS))
@pytest.mark.parametrize(
    ("path", "method"), [pytest.param(p, m, id=f"{m.upper()} {p}") for p, m in OPERATIONS]
)
def test_the_endpoints_keep_to_their_served_document_with_every_check(
    stack: Stack, path: str, method: str, who: str
) -> None:
    assert len(CROSS_PARAMETER_RULES) == 2  # the only cases left out, named in docs/api.md
    served = stack
    operation = served.schema[path][method]
    known = next(ids for start, ids in served.known.items() if path.startswith(start))
    cases = st.one_of(
        operation.as_strategy(),
        aimed(operation.as_strategy(), known),
        # invalid by the document: the server must refuse it (the document is no looser)
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        aimed(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE), known),
    )
    headers = CALLERS[who]

    @replayable(40)
    @given(case=fuzzed(cases))
    def check(case: Any) -> None:
        case.headers = {**headers, **(case.headers or {})}
        case.call_and_validate()  # every registered check

    check()
