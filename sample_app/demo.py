"""``python -m sample_app demo``: a tour of the toolkit in under a minute, no set-up.

It starts the sample on a throw-away SQLite database in this process (the API
on a local port, the agents in threads), then acts as an API consumer would,
over HTTP: it creates a network and three ports in one bulk request, shows the
twelve tasks move live, prints the operation, deletes a port and shows that
its tasks are gone while its operation is still readable, and ends with a
flaky port whose task fails once, retryably, and succeeds on its second attempt.
It ends by printing the URL of the bulk operation's page (its timeline); with
``stay`` it keeps serving, so the page can still be opened, until interrupted.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urljoin

from sample_app._client import Client, Reply
from sample_app._server import BackgroundServer
from sample_app.agents import Agents
from sample_app.app import make_app
from sample_app.engine import create_sample_engine
from sample_app.models import PORT_TASKS

__all__ = ["TaskBoard", "run_demo"]

#: Longest a single step may wait for the agents before the demo gives up.
STEP_TIMEOUT = 30.0
_BAR = 20
_ORDER = {name: i for i, name in enumerate(PORT_TASKS)}
_GONE = "gone: deleted with its port (step 8 shows how it ended)"


class DemoError(RuntimeError):
    """The demo could not go on: the API answered something unexpected."""


@dataclass
class TaskBoard:
    """Live progress of tasks, one line per task.

    On a terminal the lines are redrawn in place; elsewhere (a pipe, a log) a
    line is printed each time a task changes state.

    :param labels: a label per resource id (the port's name).
    """

    out: TextIO
    labels: dict[str, str]
    tty: bool
    _drawn: int = 0
    _seen: dict[str, str] | None = None
    _last: dict[str, dict[str, Any]] | None = None

    def show(self, tasks: list[dict[str, Any]]) -> None:
        """Draw the current state of ``tasks``; a task seen before and now missing is
        shown as deleted (its resource was deleted, and the task with it)."""
        last = self._last if self._last is not None else {}
        listed = {t["id"] for t in tasks}
        for task in tasks:
            last[task["id"]] = task
        for task_id, task in list(last.items()):
            if task_id not in listed and task["state"] != _GONE:
                last[task_id] = dict(task, state=_GONE)
        self._last = last
        ordered = sorted(
            last.values(),
            key=lambda t: (
                list(self.labels).index(t["resource_id"]) if t["resource_id"] in self.labels else 0,
                _ORDER.get(t["name"], 99),
                t["created_at"],
            ),
        )
        if self.tty:
            if self._drawn:
                self.out.write(f"\x1b[{self._drawn}A")
            for task in ordered:
                self.out.write("\r\x1b[2K" + self._line(task) + "\n")
            self._drawn = len(ordered)
        else:
            seen = self._seen if self._seen is not None else {}
            for task in ordered:
                if seen.get(task["id"]) != task["state"]:
                    seen[task["id"]] = task["state"]
                    self.out.write(self._line(task) + "\n")
            self._seen = seen
        self.out.flush()

    def _line(self, task: dict[str, Any]) -> str:
        label = self.labels.get(task["resource_id"], task["resource_id"][:8])
        progress = task.get("progress") or 0
        filled = _BAR * progress // 100
        bar = "#" * filled + "-" * (_BAR - filled)
        state = task["state"]
        if state == "failed" and task.get("error"):
            state = f"failed: {task['error']['message']}"
        return f"  {label:<10} {task['name']:<18} [{bar}] {progress:>3}%  {state}"


def _say(out: TextIO, text: str = "") -> None:
    out.write(text + "\n")
    out.flush()


def _expect(reply: Reply, status: int, what: str) -> Any:
    if reply.status != status:
        raise DemoError(f"{what}: expected HTTP {status}, got {reply.status}: {reply.body}")
    return reply.body


def _wait(
    client: Client, path: str, done: Callable[[dict[str, Any]], bool], on_poll: Any = None
) -> dict[str, Any]:
    """Poll ``path`` until ``done(body)``, for at most :data:`STEP_TIMEOUT` seconds."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while True:
        body = _expect(client.get(path), 200, f"GET {path}")
        if on_poll is not None:
            on_poll(body)
        if done(body):
            return dict(body)
        if time.monotonic() > deadline:
            raise DemoError(f"GET {path}: still not done after {STEP_TIMEOUT:.0f} s")
        time.sleep(0.1)


def _operation_path(reply: Reply) -> str:
    location = reply.header("Operation-Location")
    if not location:
        raise DemoError("the response has no Operation-Location header")
    return location


def _summary(operation: dict[str, Any]) -> str:
    keep = (
        "id",
        "method",
        "path",
        "action",
        "state",
        "http_status",
        "task_counts",
        "created_at",
        "finished_at",
    )
    return json.dumps({k: operation.get(k) for k in keep}, indent=2)


def run_demo(
    out: TextIO | None = None,
    *,
    task_delay: float = 0.4,
    agents: int = 4,
    tty: bool | None = None,
    stay: bool = False,
) -> int:
    """Run the tour; returns the exit status (0 when everything went as shown).

    :param stay: keep serving after the tour, until Ctrl-C.
    """
    out = out or sys.stdout
    tty = out.isatty() if tty is None else tty
    with tempfile.TemporaryDirectory(prefix="sample_app_demo_") as tmp:
        engine = create_sample_engine(f"sqlite:///{Path(tmp) / 'demo.db'}", create=True)
        try:
            app = make_app(engine)
            with (
                BackgroundServer(app) as server,
                Agents(engine, count=agents, task_delay=task_delay),
            ):
                _say(out, f"The sample API serves on {server.url} (SQLite in {tmp}).")
                bulk = _tour(Client(server.url), out, tty)
                page = urljoin(server.url, bulk)
                _say(out, f"\nThe bulk operation's timeline, in a browser: {page}")
                if stay:
                    _stay(out)
                else:
                    _say(out, "(served while the demo runs; --stay keeps it up after the tour)")
        except DemoError as exc:
            _say(out, f"\nThe demo stopped: {exc}")
            return 1
        finally:
            engine.dispose()
    return 0


def _stay(out: TextIO) -> None:
    """Serve until Ctrl-C."""
    _say(out, "Serving until Ctrl-C.")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


def _retried(client: Client, out: TextIO, network_id: str) -> None:
    """Step 9: a retryable failure, and the task's two attempts."""
    name = "flaky-l2_wiring"
    _say(
        out, f"\n9. POST /ports named {name}: its l2_wiring fails once, retryably, then runs again."
    )
    reply = client.post("/ports", {"port": {"network_id": network_id, "name": name}})
    _expect(reply, 202, "POST /ports")
    path = _operation_path(reply)
    operation = _wait(client, path, lambda body: body["operation"]["state"] != "running")
    tasks = operation["operation"]["tasks"]
    task = next((t for t in tasks if t["name"] == "l2_wiring"), None)
    if task is None or len(task["attempts"]) != 2:
        raise DemoError(f"expected l2_wiring with two attempts, got {task}")
    for attempt in task["attempts"]:
        error = attempt["error"]
        why = f" ({error['code']}: {error['message']})" if error else ""
        _say(out, f"   attempt {attempt['number']}: {attempt['outcome']}{why}")
    _say(out, f"   the task is {task['state']}, the operation {operation['operation']['state']}")


def _tour(client: Client, out: TextIO, tty: bool) -> str:
    """The steps; returns the path of the bulk operation (step 2)."""
    _say(out, "\n1. POST /networks: a network spawns no task, its operation ends at once.")
    reply = client.post("/networks", {"network": {"name": "demo-net"}})
    network = _expect(reply, 201, "POST /networks")["network"]
    _say(out, f"   201 {json.dumps(network)}")
    _say(out, f"   X-Request-Id: {reply.header('X-Request-Id')}")

    _say(out, "\n2. POST /ports with three ports in one request: one operation, twelve tasks.")
    ports_body = [{"network_id": network["id"], "name": name} for name in ("web", "db", "cache")]
    reply = client.post("/ports", {"ports": ports_body})
    ports = _expect(reply, 202, "POST /ports")["ports"]
    create_op = _operation_path(reply)
    _say(out, f"   202, every port in status {ports[0]['status']}")
    _say(out, f"   Operation-Location: {create_op}")

    _say(out, "\n3. The agents run the tasks (GET the operation until it ends):")
    board = TaskBoard(out, {p["id"]: p["name"] for p in ports}, tty)
    operation = _wait(
        client,
        create_op,
        lambda body: body["operation"]["state"] != "running",
        on_poll=lambda body: board.show(body["operation"].get("tasks", [])),
    )["operation"]

    _say(out, "\n4. The operation, as GET " + create_op + " shows it:")
    _say(out, _summary(operation))

    listed = _expect(client.get("/ports"), 200, "GET /ports")["ports"]
    _say(out, "\n5. GET /ports: each status is derived from its tasks, none is stored:")
    for port in listed:
        _say(out, f"   {port['name']:<6} {port['status']}")

    victim = ports[0]
    _say(out, f"\n6. DELETE /ports/{victim['id']} ({victim['name']}): spawns an unbind task.")
    tasks_before = _expect(
        client.get(f"/ports/{victim['id']}/tasks"), 200, "GET /ports/<id>/tasks"
    )["tasks"]
    reply = client.delete(f"/ports/{victim['id']}")
    _expect(reply, 202, "DELETE /ports/<id>")
    delete_op = _operation_path(reply)
    board = TaskBoard(out, {victim["id"]: victim["name"]}, tty)
    _wait(
        client,
        delete_op,
        lambda body: body["operation"]["state"] != "running",
        on_poll=lambda body: board.show(body["operation"].get("tasks", [])),
    )

    _say(out, "\n7. The port is gone, and its tasks with it (the same transaction):")
    gone = client.get(f"/ports/{victim['id']}")
    _say(out, f"   GET /ports/{victim['id']} -> {gone.status}")
    if gone.status != 404:
        raise DemoError(f"the deleted port still answers {gone.status}")
    left = _expect(
        client.get(f"/tasks?resource_id={victim['id']}"), 200, "GET /tasks?resource_id=<id>"
    )["tasks"]
    _say(
        out,
        f"   GET /tasks?resource_id={victim['id']} -> {len(left)} tasks "
        f"(it had {len(tasks_before)}, then the unbind task)",
    )
    if left:
        raise DemoError(f"the deleted port still has {len(left)} tasks")

    _say(out, "\n8. Its operations are still readable, with their task counts:")
    for path in (delete_op, create_op):
        operation = _expect(client.get(path), 200, f"GET {path}")["operation"]
        counts = {k: v for k, v in operation["task_counts"].items() if v}
        _say(
            out,
            f"   {operation['method']:<6} {operation['path']:<44} {operation['state']:<9} "
            f"{json.dumps(counts)}",
        )

    _retried(client, out, network["id"])

    _say(out, "\nTry it: python -m sample_app serve (docs/sample_app.md has curl examples).")
    _say(out, "A port named fail-dhcp_provisioning shows a failed task, its error, an ERROR port.")
    return create_op
