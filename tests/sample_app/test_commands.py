"""The sample's commands: the demo (the README's first command), serve, paste and gunicorn."""

from __future__ import annotations

import importlib
import io
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

import pytest
import webtest
from paste.deploy import loadapp

from sample_app.demo import run_demo
from tests.sample_app.conftest import DEADLINE, ROOT, Http, start_process, wait_for
from tests.sample_app.servers import gunicorn_url, port_status, start_gunicorn

PASTE_INI = ROOT / "sample_app" / "api-paste.ini"


def readme_command(marker: str) -> str:
    lines = (ROOT / "README.md").read_text().splitlines()
    return lines[lines.index(marker) + 2]


def test_the_readme_opens_with_the_demo() -> None:
    assert readme_command("<!-- demo-command -->").endswith("python -m sample_app demo")


def test_demo_command_runs_by_itself_in_under_a_minute() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "sample_app", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 60
    out = result.stdout
    # Plain lines (not a terminal): every task reached "succeeded", one line each.
    board = [line for line in out.splitlines() if "%  " in line]
    succeeded = [line for line in board if line.rstrip().endswith("succeeded")]
    assert len(succeeded) == 12
    assert re.search(r"(?m)^  web +unbind .* gone: deleted with its port \(step 8 .*\)$", out)
    assert "\x1b[" not in out
    assert re.search(r'"succeeded": 12', out)
    assert re.search(r"GET /ports/[0-9a-f-]{36} -> 404", out)
    assert re.search(r"GET /tasks\?resource_id=[0-9a-f-]{36} -> 0 tasks", out)
    assert re.search(r'DELETE /ports/[0-9a-f-]{36} +succeeded \{"succeeded": 1\}', out)
    assert re.search(r'POST +/ports +succeeded \{"succeeded": 12\}', out)
    # Step 9: a retryable failure, then a second attempt that succeeds.
    assert re.search(
        r"(?m)^   attempt 1: failed \(injected_failure: .*first attempt only\)\)$", out
    )
    assert re.search(r"(?m)^   attempt 2: succeeded$", out)
    # It ends with the page of the bulk operation (step 2's).
    assert re.search(
        r"(?m)^The bulk operation's timeline, in a browser: "
        r"http://127\.0\.0\.1:\d+/operations/req-[0-9a-f-]{36}$",
        out,
    )
    assert result.stderr == ""


def test_demo_redraws_in_place_on_a_terminal() -> None:
    out = io.StringIO()
    assert run_demo(out, task_delay=0.01, agents=2, tty=True) == 0
    text = out.getvalue()
    assert "\x1b[12A" in text  # the twelve lines of the board, redrawn
    assert "gone: deleted with its port" in text


def test_serve_prints_the_page_of_each_mutating_requests_operation(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'serve.db'}"
    running = start_process(
        [sys.executable, "-m", "sample_app", "serve", "--port", "0", "--db-url", db],
        tmp_path / "stderr.log",
    )
    try:
        first = running.first_line("sample_app serve")
        client = Http(first.split()[2].rstrip("/"))
        client.get("/networks")  # a GET opens no operation: no line
        reply = client.post("/networks", {"network": {"name": "n"}})
        line = running.first_line("the operation's page").rstrip("\n")
        expected = f"{client.base_url}/operations/{reply.header('X-Request-Id')}"
        assert line == f"POST /networks 201: {expected}"
        page = urllib.request.urlopen(
            urllib.request.Request(expected, headers={"Accept": "text/html"}), timeout=DEADLINE
        )
        assert page.status == 200 and page.headers.get_content_type() == "text/html"
    finally:
        assert running.stop() == 0, running.stderr()


def test_serve_refuses_a_bad_database_url() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sample_app", "serve", "--db-url", "nosuchdb://x", "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("sample_app: cannot use --db-url 'nosuchdb://x'")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--task-delay", "-1"], "between 0 and 3600", id="negative-delay"),
        pytest.param(["--agents", "many"], "not an integer", id="agents"),
        pytest.param(["--port", "70000"], "not a port number", id="port"),
    ],
)
def test_serve_refuses_bad_options(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sample_app", "serve", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert result.returncode == 2
    assert message in result.stderr


@pytest.fixture
def sample_wsgi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``sample_app.wsgi`` (its toolkit) made again on a SQLite file in ``tmp_path``."""
    monkeypatch.setenv("SAMPLE_APP_DB_URL", f"sqlite:///{tmp_path / 'paste.db'}")
    module = importlib.reload(importlib.import_module("sample_app.wsgi"))
    yield module
    module.toolkit.engine.dispose()


def test_the_library_installs_no_sample_entry_point() -> None:
    # The sample is not installed with the library: api-paste.ini names its factory.
    assert not entry_points(group="paste.app_factory", name="sample_app")
    text = PASTE_INI.read_text()
    assert "paste.app_factory = sample_app.wsgi:app_factory" in text
    assert "url" not in text.split("[pipeline:main]")[1]  # no database URL in the pipeline


def test_the_paste_pipeline_serves_the_api(sample_wsgi: ModuleType) -> None:
    pipeline = loadapp(f"config:{PASTE_INI}")
    assert pipeline.app.engine is sample_wsgi.toolkit.engine  # one engine, one pool
    app = webtest.TestApp(pipeline, lint=True)
    reply = app.post_json("/networks", {"network": {"name": "n"}}, status=201)
    request_id = reply.headers["X-Request-Id"]
    assert reply.headers["Operation-Location"].endswith(f"/operations/{request_id}")
    operation = app.get(f"/operations/{request_id}").json["operation"]
    assert operation["action"] == "create_network"
    assert operation["project_id"] == "demo"


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        pytest.param({"create_tables": "maybe"}, "true or false", id="create-tables"),
        pytest.param({"colour": "blue"}, "unknown option 'colour'", id="unknown"),
        pytest.param({"db_url": "sqlite:///x.db"}, "unknown option 'db_url'", id="no-url"),
    ],
)
def test_app_factory_refuses_bad_configuration(
    sample_wsgi: ModuleType, conf: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sample_wsgi.app_factory({}, **conf)


def test_the_sample_refuses_an_in_memory_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMPLE_APP_DB_URL", "sqlite://")
    with pytest.raises(ValueError, match="not an in-memory database"):
        importlib.reload(importlib.import_module("sample_app.wsgi"))


def test_gunicorn_and_agents_serve_the_paste_pipeline(tmp_path: Path) -> None:
    """The production-style run of docs/sample_app.md: agents, then gunicorn workers."""
    ini = PASTE_INI
    agents = start_process(
        [
            sys.executable,
            "-m",
            "sample_app",
            "agents",
            "--db-url",
            f"sqlite:///{tmp_path / 'paste.db'}",
            "--task-delay",
            "0.01",
        ],
        tmp_path / "agents.log",
    )
    gunicorn = None
    try:
        # The agents create the tables before they say they run.
        assert agents.first_line("sample_app agents").startswith("2 agents running")
        gunicorn = start_gunicorn(
            ini,
            tmp_path,
            tmp_path / "gunicorn.log",
            "--workers",
            "2",
            db_url=f"sqlite:///{tmp_path / 'paste.db'}",
        )
        url = wait_for(
            lambda: gunicorn_url(gunicorn),
            lambda found: found != "" or gunicorn.process.poll() is not None,
            "gunicorn listening",
        )
        assert url, gunicorn.stderr()
        client = Http(url, project="gp")
        reply = client.post("/networks", {"network": {"name": "g"}})
        assert reply.status == 201
        assert reply.body["network"]["project_id"] == "gp"
        assert reply.header("Operation-Location") == (
            f"{client.base_url}/operations/{reply.header('X-Request-Id')}"
        )
        reply = client.post("/ports", {"port": {"network_id": reply.body["network"]["id"]}})
        assert reply.status == 202
        port_status(client, reply.body["port"]["id"], "ACTIVE")  # the agents ran its tasks
    finally:
        if gunicorn is not None:
            assert gunicorn.stop() == 0, gunicorn.stderr()
        assert agents.stop() == 0, agents.stderr()


README_EXAMPLE_DRIVER = """
import webtest
from urllib.parse import urlsplit
example_operation = urlsplit(dict(headers)["Operation-Location"]).path
client = webtest.TestApp(app, extra_environ={"HTTP_X_PROJECT_ID": "demo"})
reply = client.post("/ports", status=202)
port_id = reply.json["port"]["id"]
assert reply.headers["Operation-Location"].endswith(reply.headers["X-Request-Id"])
def states():
    return [t["state"] for t in client.get(f"/ports/{port_id}/tasks").json["tasks"]]
assert states() == ["pending"] * 2
while (job := worker.claim()) is not None:
    with job: pass
assert states() == ["succeeded"] * 2
assert client.get(reply.headers["Operation-Location"]).json["operation"]["state"] == "succeeded"
# The example's own request recorded its end: its operation is over too.
from tasktoolkit.orm import Operation
with Session() as session:
    assert session.get(Operation, example_operation.rsplit("/", 1)[1]).state == "succeeded"
print("example ok")
"""


def test_the_readme_example_runs(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- example -->\n```python\n(.*?)```", text, re.DOTALL)
    assert found is not None, "README.md has no example after <!-- example -->"
    script = tmp_path / "example.py"
    script.write_text(found.group(1) + README_EXAMPLE_DRIVER)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("example ok")
