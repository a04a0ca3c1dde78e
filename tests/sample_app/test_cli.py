"""The ``tasktoolkit`` day-2 commands against the sample served by a real process: over HTTP
as one of its projects (a task is cancelled under the collection its resource is mounted
at, found in the service's openapi.json), and on its database as an operator."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tasktoolkit import commands
from tests.commands.conftest import run
from tests.sample_app.conftest import Http, serving
from tests.sample_app.test_e2e import create_port, new_network


@pytest.fixture(autouse=True)
def _no_service_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TASKTOOLKIT_URL", "TASKTOOLKIT_DB_URL", "OS_CLOUD", "OS_AUTH_URL", "OS_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def idle(sample_db: URL, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Http]:
    """The sample served without agents: its tasks stay pending until cancelled."""
    log = tmp_path_factory.mktemp("serve") / "stderr.log"
    with serving(sample_db, log, "--agents", "0") as http:
        yield http


def _as(client: Http) -> list[str]:
    return ["--url", client.base_url, "--header", f"X-Project-Id: {client.project}"]


def test_a_project_lists_shows_and_cancels_its_ports_tasks(
    capsys: pytest.CaptureFixture[str], idle: Http, sample_db: URL, tmp_path: Path
) -> None:
    client = idle.as_project(f"p-{uuid.uuid4().hex[:12]}")
    port = create_port(client, new_network(client)["id"], "web").body["port"]
    listed = ["tasks", "list", "--resource-id", port["id"], "-f", "json", "-c", "id", "-c", "name"]
    status, out, err = run(capsys, *listed, *_as(client), "-c", "state")
    assert (status, err) == (0, "")
    tasks = json.loads(out)
    assert tasks and {task["state"] for task in tasks} == {"pending"}
    first = tasks[0]["id"]

    # A task is cancelled under /ports/<id>/tasks/<id>/cancel: no --collection needed.
    cancel = ["tasks", "cancel", first, *_as(client), "-f", "value", "-c", "state"]
    assert run(capsys, *cancel) == (0, "cancelled\n", "")

    # Another project sees none of it.
    stranger = idle.as_project("p-stranger")
    assert run(capsys, *listed, *_as(stranger)) == (0, "[]\n", "")
    status, out, err = run(capsys, "tasks", "show", first, *_as(stranger))
    assert (status, out) == (commands.EXIT_ERROR, "")
    assert "HTTP 404" in err

    # The operator, on the database, sees the same task as the project did.
    on_database = ["--db-url", sample_db.render_as_string(hide_password=False)]
    shown = ["tasks", "show", first, "-f", "json", "-c", "id", "-c", "name", "-c", "state"]
    status, out, err = run(capsys, *shown, *on_database)
    assert (status, err) == (0, "")
    assert json.loads(out) == {**tasks[0], "state": "cancelled"}
    status, http_out, err = run(capsys, *shown, *_as(client))
    assert json.loads(http_out) == json.loads(out)
