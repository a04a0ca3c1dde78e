"""The sample app serves its OpenAPI document, and keeps to it: schemathesis with every check.

Every check runs, positive-data acceptance included: a request that is valid
by the document must not be refused (no 400 for a value the document allows),
no 5xx, no answer outside the document; but for the rules across parameters no
document can state (``tests.fuzzing.CROSS_PARAMETER_RULES``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from sqlalchemy.engine import make_url

from sample_app.app import make_app
from sample_app.engine import create_sample_engine
from tasktoolkit.orm import drop_all
from tests.fuzzing import fuzzed, replayable


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    path = Path(tmp_path_factory.mktemp("openapi")) / "sample.db"
    engine = create_sample_engine(make_url(f"sqlite:///{path}"), create=True)
    stack = make_app(engine)
    yield stack
    stack.app.close()  # type: ignore[attr-defined]
    drop_all(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def schema(app: Any) -> Any:
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


@pytest.fixture(scope="module")
def seeded(app: Any) -> dict[str, str]:
    """A network and a port with its tasks, in project demo, and the port's operation."""
    import webtest

    client = webtest.TestApp(app)
    network = client.post_json("/networks", {"network": {"name": "n"}}).json["network"]["id"]
    reply = client.post_json("/ports", {"port": {"network_id": network}})
    port = reply.json["port"]["id"]
    tasks = client.get(f"/ports/{port}/tasks").json["tasks"]
    return {
        "network": network,
        "port": port,
        "task": tasks[0]["id"],
        "operation": reply.headers["X-Request-Id"],
    }


def test_the_document_is_served_and_describes_the_mounted_collections(schema: Any) -> None:
    paths = set(schema.raw_schema["paths"])
    assert "/ports/{resource_id}/tasks" in paths and "/networks/{resource_id}/tasks" in paths
    assert "/operations/{operation_id}" in paths


def _operations() -> list[tuple[str, str]]:
    from tasktoolkit.endpoints import openapi_document

    document = openapi_document(collections=["networks", "ports"])
    return [(p, m) for p, item in document["paths"].items() for m in item if m in ("get", "post")]


@pytest.mark.parametrize(
    ("path", "method"), [pytest.param(p, m, id=f"{m.upper()} {p}") for p, m in _operations()]
)
def test_the_sample_keeps_to_its_served_document_with_every_check(
    schema: Any, seeded: dict[str, str], path: str, method: str
) -> None:
    operation = schema[path][method]
    known = {
        "resource_id": seeded["network" if path.startswith("/networks") else "port"],
        "task_id": seeded["task"],
        "operation_id": seeded["operation"],
    }
    names = {
        p["name"]
        for p in operation.definition.raw.get("parameters", [])
        + schema.raw_schema["paths"][path].get("parameters", [])
        if "name" in p
    }
    cases = st.one_of(
        operation.as_strategy(),
        operation.as_strategy(path_parameters={k: v for k, v in known.items() if k in names}),
        # invalid by the document: the server must refuse it (the document is no looser)
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @replayable(60)
    @given(case=fuzzed(cases))
    def check(case: Any) -> None:
        case.call_and_validate()  # every registered check

    check()
