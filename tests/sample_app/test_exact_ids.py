"""Ids compare exactly on every database, in a MariaDB database whose collation ignores case.

The other tests' MariaDB databases compare exactly (``utf8mb4_bin``); here the
database keeps MariaDB's own default, ``utf8mb4_general_ci``, as a host's
would, and the toolkit's columns still compare exactly.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import webtest
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine

from sample_app.app import make_app
from sample_app.engine import create_sample_engine
from tasktoolkit.orm import drop_all, migrations
from tests.databases import private_database


@pytest.fixture(scope="module")
def ci_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[URL]:
    tmp = tmp_path_factory.mktemp("exact")
    with private_database(backend, tmp, mariadb_collation="utf8mb4_general_ci") as url:
        yield url


@pytest.fixture(scope="module")
def ci_engine(ci_url: URL) -> Iterator[Engine]:
    engine = create_sample_engine(ci_url, create=True)
    yield engine
    drop_all(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def api(ci_engine: Engine) -> Iterator[webtest.TestApp]:
    stack = make_app(ci_engine)
    yield webtest.TestApp(stack, lint=True)
    stack.app.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def port_id(api: webtest.TestApp) -> str:
    network = api.post_json("/networks", {"network": {"name": "n"}}).json["network"]["id"]
    port = api.post_json("/ports", {"port": {"network_id": network}}).json["port"]["id"]
    assert str(uuid.UUID(port)) == port
    return str(port)


def other_forms(port_id: str) -> list[str]:
    return [port_id.upper(), "{" + port_id + "}", "urn:uuid:" + port_id, port_id.replace("-", "")]


def test_the_sample_and_the_task_endpoints_take_one_id_form(
    api: webtest.TestApp, port_id: str
) -> None:
    assert api.get(f"/ports/{port_id}").status_int == 200
    assert len(api.get(f"/ports/{port_id}/tasks").json["tasks"]) == 4
    for form in other_forms(port_id):
        assert api.get(f"/ports/{form}", status=404).json["errors"]
        assert api.get(f"/ports/{form}/tasks", status=404).json["errors"]


def test_filters_and_projects_compare_exactly(api: webtest.TestApp, port_id: str) -> None:
    assert len(api.get(f"/tasks?resource_id={port_id}").json["tasks"]) == 4
    assert api.get(f"/tasks?resource_id={port_id.upper()}").json["tasks"] == []
    assert api.get("/tasks?name=L2_WIRING").json["tasks"] == []
    # the sample's records are in project "demo": "DEMO" is another project
    assert api.get("/tasks", headers={"X-Project-Id": "DEMO"}).json["tasks"] == []
    assert api.get("/operations", headers={"X-Project-Id": "DEMO"}).json["operations"] == []
    assert len(api.get("/tasks", headers={"X-Project-Id": "demo"}).json["tasks"]) == 4


def test_migrations_make_the_id_columns_exact(backend: str, tmp_path: Path) -> None:
    with private_database(backend, tmp_path, mariadb_collation="utf8mb4_general_ci") as url:
        migrations.upgrade(url)
        if backend != "mariadb":
            return
        engine = create_sample_engine(url)
        try:
            with engine.connect() as conn:
                found = dict(
                    conn.execute(
                        text(
                            "SELECT concat(table_name, '.', column_name), collation_name "
                            "FROM information_schema.columns WHERE table_schema = :db "
                            "AND column_name IN ('id', 'resource_id', 'project_id', 'name')"
                        ),
                        {"db": url.database},
                    ).all()
                )
        finally:
            engine.dispose()
        assert found == {
            "tasktoolkit_operations.id": "utf8mb4_bin",
            "tasktoolkit_operations.resource_id": "utf8mb4_bin",
            "tasktoolkit_operations.project_id": "utf8mb4_bin",
            "tasktoolkit_tasks.id": "utf8mb4_bin",
            "tasktoolkit_tasks.resource_id": "utf8mb4_bin",
            "tasktoolkit_tasks.project_id": "utf8mb4_bin",
            "tasktoolkit_tasks.name": "utf8mb4_bin",
            "tasktoolkit_idempotency_keys.project_id": "utf8mb4_bin",
            "tasktoolkit_reaper_watch.name": "utf8mb4_bin",
            "tasktoolkit_workers.id": "utf8mb4_bin",
            "tasktoolkit_operation_resources.resource_id": "utf8mb4_bin",
        }
