"""Prefer: wait on an operation's and a task's GET, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import routes
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from webob import Request, Response

from tasktoolkit import Settings, context
from tasktoolkit.endpoints import Router, TaskEndpoints, mount
from tasktoolkit.endpoints._waiting import PREFER_REFUSED, parse_prefer
from tasktoolkit.errors import ConfigurationError, InvalidHeaderError
from tasktoolkit.orm import prepare_engine
from tasktoolkit.orm._listening import Listener
from tasktoolkit.orm._operations import end_request
from tasktoolkit.orm._transitions import report_progress, start_task, succeed_task
from tests.endpoints.conftest import COLLECTIONS, caller, open_post
from tests.fuzzing import replayable
from tests.models import Cluster

ROOT = Path(__file__).resolve().parents[2]

A = caller("project-a")


PREFER = [
    pytest.param(None, None, id="none"),
    pytest.param("wait=5", 5, id="five"),
    pytest.param("Wait=5", 5, id="any-case"),
    pytest.param(" wait = 7 ", 7, id="spaces"),
    pytest.param("\twait=7\t", 7, id="tabs"),
    pytest.param("wait=0", 0, id="zero"),
    pytest.param('wait="5"', 5, id="quoted"),
    pytest.param("wait=999999999", 30, id="capped"),
    pytest.param("wait=2, return=minimal", 2, id="with-return-minimal"),
    pytest.param("respond-async, wait=5", 5, id="after-another-preference"),
    pytest.param("wait=5;x=1", 5, id="parameter-ignored"),
    pytest.param("wait=5, wait=6", 5, id="the-first-wait-counts"),
    pytest.param("wait=5, wait=bad", 5, id="a-later-wait-ignored"),
    pytest.param("return=minimal", None, id="only-another-preference"),
    pytest.param("", None, id="empty"),
    pytest.param("waiting=1", None, id="another-name"),
    pytest.param("x=wait, handling=lenient", None, id="wait-as-a-value"),
    pytest.param(",,;=", None, id="nothing-named"),
]
BAD_PREFER = [
    pytest.param("wait=-1", id="negative"),
    pytest.param("wait=abc", id="not-a-number"),
    pytest.param("wait=", id="empty-wait"),
    pytest.param("wait", id="no-value"),
    pytest.param("wait=1.5", id="fraction"),
    pytest.param("return=minimal, wait=soon", id="after-another-preference"),
    pytest.param("wait=5=6", id="two-equals"),
    pytest.param('wait="5', id="unclosed-quote"),
    pytest.param('wait=""', id="empty-quotes"),
    pytest.param("wait=1" + "0" * 20, id="huge"),
    pytest.param("wait=\x005", id="nul"),
]


@pytest.mark.parametrize(("header", "expected"), PREFER)
def test_prefer_wait_is_read_and_capped(header: str | None, expected: int | None) -> None:
    assert parse_prefer(header, cap=30) == expected


@pytest.mark.parametrize("header", BAD_PREFER)
def test_a_bad_prefer_is_refused(header: str) -> None:
    with pytest.raises(InvalidHeaderError, match="Prefer"):
        parse_prefer(header, cap=30)


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        *[pytest.param(p.values[0], True, id=p.id) for p in PREFER if p.values[0] is not None],
        *[pytest.param(p.values[0], False, id=p.id) for p in BAD_PREFER],
    ],
)
def test_the_documents_pattern_refuses_what_the_server_does(header: str, accepted: bool) -> None:
    assert (re.search(PREFER_REFUSED, header) is None) is accepted


@replayable(2000)
@given(st.text(st.sampled_from(' \t,;="wWaAiItT059x-\x0b\xa0'), max_size=24))
def test_the_pattern_and_the_parser_agree_on_any_header(header: str) -> None:
    try:
        parse_prefer(header, cap=30)
        accepted = True
    except InvalidHeaderError:
        accepted = False
    assert (re.search(PREFER_REFUSED, header) is None) is accepted


@pytest.fixture
def endpoints(session_factory: sessionmaker[Session]) -> Iterator[Callable[..., Any]]:
    """``endpoints(**settings)``: (the routed app, the mounted TaskEndpoints)."""
    made: list[TaskEndpoints] = []

    def make(factory: Any = None, **settings: Any) -> tuple[Router, TaskEndpoints]:
        mapper = routes.Mapper()
        mounted = mount(
            mapper,
            collections=COLLECTIONS,
            session_factory=factory or session_factory,
            settings=Settings(**settings),
        )
        made.append(mounted)
        return Router(mapper), mounted

    yield make
    for mounted in made:
        mounted.close()


def get(app: Router, path: str, **headers: str) -> Response:
    return Request.blank(path, headers={**A, **headers}).get_response(app)


class OneTask:
    """A running operation of project-a whose request ended (202) with one pending task."""

    def __init__(self, session: Session) -> None:
        self.operation_id = context.new_request_id()
        open_post(session, self.operation_id, "project-a")
        cluster = Cluster(name="c", project_id="project-a")
        session.add(cluster)
        session.flush()
        ctx = context.RequestContext(
            request_id=self.operation_id, project_id="project-a", operation_id=self.operation_id
        )
        with context.request_context(ctx):
            (task,) = cluster.spawn_tasks(["build"])
        end_request(session.connection(), self.operation_id, 202)
        session.commit()
        self.task_id = task.id
        self.cluster_id = cluster.id
        self.paths = {
            "operation": f"/operations/{self.operation_id}",
            "task": f"/tasks/{task.id}",
            "resource-task": f"/clusters/{cluster.id}/tasks/{task.id}",
        }


@pytest.fixture
def one(session: Session) -> OneTask:
    return OneTask(session)


def finish(session_factory: sessionmaker[Session], task_id: str) -> float:
    """Run the task to success; the moment its commit returned."""
    with session_factory() as session:
        start_task(session, task_id, host="w")
        session.commit()
        succeed_task(session, task_id, result={"done": True})
        session.commit()
        return time.monotonic()


KINDS = ["operation", "task", "resource-task"]
Listening = tuple[Router, TaskEndpoints]


@pytest.fixture(params=KINDS)
def path(request: pytest.FixtureRequest, one: OneTask) -> str:
    """``one``'s operation, its task, and its task under its resource: every waiting GET."""
    return one.paths[request.param]


@pytest.fixture
def app(endpoints: Callable[..., Any]) -> Router:
    """The routed app of a mount with the default options."""
    router: Router = endpoints()[0]
    return router


def record_of(response: Response) -> dict[str, Any]:
    """The operation or the task a waiting GET answered with."""
    record: dict[str, Any] = response.json.get("operation") or response.json["task"]
    return record


def first_task(response: Response) -> dict[str, Any]:
    """The task a waiting GET answered with (the operation's one task)."""
    record = record_of(response)
    task: dict[str, Any] = record.get("tasks", [record])[0]
    return task


@pytest.mark.parametrize("header", BAD_PREFER[:6])
def test_a_malformed_wait_is_400_on_every_waiting_get(app: Router, path: str, header: str) -> None:
    response = get(app, path, Prefer=header)
    assert response.status_int == 400
    (error,) = response.json["errors"]
    assert error["code"] == "tasktoolkit.invalid_header"


def test_a_terminal_record_answers_at_once(
    app: Router, path: str, one: OneTask, session_factory: sessionmaker[Session]
) -> None:
    finish(session_factory, one.task_id)
    started = time.monotonic()
    response = get(app, path, Prefer="wait=20")
    assert time.monotonic() - started < 10  # never the whole wait
    assert response.status_int == 200
    assert response.headers["Preference-Applied"] == "wait=20"
    assert record_of(response)["state"] == "succeeded"


def test_a_running_record_is_answered_as_it_is_when_the_wait_is_over(
    endpoints: Callable[..., Any], path: str
) -> None:
    app, _ = endpoints(max_wait=1)
    started = time.monotonic()
    response = get(app, path, Prefer="wait=3600")
    assert time.monotonic() - started >= 0.9
    assert response.status_int == 200
    assert response.headers["Preference-Applied"] == "wait=1"  # the mount's cap
    assert record_of(response)["state"] in ("running", "pending")


def test_a_wait_answers_when_the_record_ends(
    app: Router, path: str, one: OneTask, session_factory: sessionmaker[Session]
) -> None:
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(get, app, path, Prefer="wait=30")
        committed = finish(session_factory, one.task_id)
        response = waiting.result(timeout=30)
    answered = time.monotonic()
    assert answered - committed < 25  # woken, not timed out
    assert record_of(response)["state"] == "succeeded"
    assert first_task(response)["result"] == {"done": True}
    assert "Retry-After" not in response.headers


def test_with_if_none_match_a_wait_answers_as_soon_as_the_record_differs(
    app: Router, path: str, one: OneTask, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        start_task(session, one.task_id, host="w")
        session.commit()
    etag = get(app, path).headers["ETag"]
    assert get(app, path, Prefer="wait=0", **{"If-None-Match": etag}).status_int == 304
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(get, app, path, Prefer="wait=30", **{"If-None-Match": etag})
        with session_factory() as session:
            report_progress(session, one.task_id, 40, message="half", host="w")
            session.commit()
        response = waiting.result(timeout=30)
    assert response.status_int == 200 and response.headers["ETag"] != etag
    task = first_task(response)
    assert (task["state"], task["progress"]) == ("running", 40)


def test_an_etag_that_never_existed_differs_at_once(app: Router, path: str) -> None:
    for etag in ('"never"', "garbage \x7f", "*x"):
        response = get(app, path, Prefer="wait=30", **{"If-None-Match": etag})
        assert response.status_int == 200


def test_an_unknown_or_hidden_record_is_404_without_waiting(app: Router, one: OneTask) -> None:
    unknown = "/operations/req-00000000-0000-4000-8000-000000000000"
    for path, headers in ((unknown, A), (one.paths["operation"], caller("project-b"))):
        response = Request.blank(path, headers={**headers, "Prefer": "wait=30"}).get_response(app)
        assert response.status_int == 404


def test_other_preferences_are_answered_as_if_absent(app: Router, path: str) -> None:
    alone = get(app, path, Prefer="return=minimal, respond-async")
    assert alone.status_int == 200 and "Preference-Applied" not in alone.headers
    beside = get(app, path, Prefer="wait=1, return=minimal")
    assert beside.status_int == 200 and beside.headers["Preference-Applied"] == "wait=1"


def test_past_max_waiting_a_wait_is_answered_at_once_without_preference_applied(
    endpoints: Callable[..., Any], path: str, one: OneTask, session_factory: sessionmaker[Session]
) -> None:
    app, mounted = endpoints(max_waiting=1)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(get, app, path, Prefer="wait=30")
        _until(lambda: mounted.waiting == 1, "the first wait is held")
        refused = get(app, path, Prefer="wait=30")
        assert refused.status_int == 200 and "Preference-Applied" not in refused.headers
        assert record_of(refused)["state"] in ("pending", "running")
        finish(session_factory, one.task_id)
        assert held.result(timeout=30).headers["Preference-Applied"] == "wait=30"
    assert mounted.waiting == 0
    assert get(app, path, Prefer="wait=30").headers["Preference-Applied"] == "wait=30"


def test_with_max_waiting_0_nothing_waits(endpoints: Callable[..., Any], path: str) -> None:
    app, _ = endpoints(max_waiting=0)
    response = get(app, path, Prefer="wait=30")
    assert response.status_int == 200 and "Preference-Applied" not in response.headers
    assert record_of(response)["state"] in ("pending", "running")


def test_a_waiting_request_holds_no_pooled_connection(
    endpoints: Callable[..., Any], one: OneTask, engine: Engine
) -> None:
    """With a pool of one connection, other requests are served while one waits."""
    small = prepare_engine(create_engine(engine.url, pool_size=1, max_overflow=0, pool_timeout=2))
    checkouts: list[int] = []
    event.listen(small.pool, "checkout", lambda *_: checkouts.append(1))
    try:
        app, _ = endpoints(sessionmaker(small, expire_on_commit=False), max_wait=6)
        with ThreadPoolExecutor(1) as pool:
            waiting: Future[Response] = pool.submit(
                get, app, one.paths["operation"], Prefer="wait=6"
            )
            _until(lambda: checkouts, "the waiting request never read")
            # For a second and a half, request after request, each needing the
            # pool's one connection.
            until = time.monotonic() + 1.5
            while time.monotonic() < until:
                assert get(app, one.paths["task"]).status_int == 200
            assert not waiting.done()
            assert waiting.result().status_int == 200
    finally:
        small.dispose()


@pytest.fixture
def listening(backend: str, endpoints: Callable[..., Any]) -> Listening:
    """The routed app and its mount, on PostgreSQL only: pushed wake-ups are PostgreSQL's
    (only it listens); elsewhere waiters poll."""
    if backend != "postgresql":
        pytest.skip("only PostgreSQL listens; elsewhere waiters poll")
    return endpoints(max_waiting=20)  # type: ignore[no-any-return]


def test_postgresql_wakes_a_waiter_within_200_ms_of_the_commit(
    listening: Listening, one: OneTask, session_factory: sessionmaker[Session]
) -> None:
    app, mounted = listening
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(get, app, one.paths["operation"], Prefer="wait=30")
        _until_listening(mounted, one.operation_id)
        committed = finish(session_factory, one.task_id)
        response = waiting.result(timeout=30)
        answered = time.monotonic()
    assert response.json["operation"]["state"] == "succeeded"
    assert answered - committed < 0.2, answered - committed


def _until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _until_listening(mounted: TaskEndpoints, record_id: str, within: float = 10) -> Listener:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        listener = mounted._waiter
        if isinstance(listener, Listener) and listener.healthy:
            with listener._lock:
                if record_id in listener._waiting:
                    return listener
        time.sleep(0.01)
    raise AssertionError("the waiting request never subscribed")


def _on_listening_connections(engine: Engine, what: str) -> object:
    """``SELECT what`` over this database's connections that LISTEN (the first row's)."""
    with engine.connect() as conn:
        value = conn.execute(
            text(
                f"SELECT {what} FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN %'"
            )
        ).scalar()
        conn.commit()
    return value


def test_postgresql_listens_on_one_connection_for_every_waiter(
    listening: Listening, engine: Engine, one: OneTask, session_factory: sessionmaker[Session]
) -> None:
    app, mounted = listening
    with ThreadPoolExecutor(20) as pool:
        waiting = [
            pool.submit(get, app, one.paths[kind], Prefer="wait=30")
            for kind in KINDS * 6 + ["operation", "task"]
        ]
        _until_listening(mounted, one.operation_id)
        listeners = _on_listening_connections(engine, "count(*)")
        finish(session_factory, one.task_id)
        states = {record_of(f.result(timeout=30))["state"] for f in waiting}
    assert listeners == 1
    assert states == {"succeeded"}


def test_the_listener_comes_back_after_its_connection_is_killed(
    listening: Listening, engine: Engine, one: OneTask, session_factory: sessionmaker[Session]
) -> None:
    app, mounted = listening
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(get, app, one.paths["task"], Prefer="wait=1")
        listener = _until_listening(mounted, one.task_id)
        first.result(timeout=30)
        _on_listening_connections(engine, "pg_terminate_backend(pid)")
        waiting = pool.submit(get, app, one.paths["operation"], Prefer="wait=30")
        assert _until_listening(mounted, one.operation_id, within=20) is listener
        finish(session_factory, one.task_id)
        assert waiting.result(timeout=30).json["operation"]["state"] == "succeeded"


def test_the_settings_refuse_a_bad_max_wait() -> None:
    for bad in (-1, 3601, "forever", True):
        with pytest.raises(ConfigurationError, match="max_wait"):
            Settings(max_wait=bad)


def test_a_wait_longer_than_the_deadline_bounds_each_read_on_its_own(
    endpoints: Callable[..., Any], path: str
) -> None:
    app, _ = endpoints(deadline=0.5, max_wait=2)
    response = get(app, path, Prefer="wait=2")
    assert response.status_int == 200, response.text
    assert response.headers["Preference-Applied"] == "wait=2"


@pytest.fixture
def gunicorn(engine: Engine, tmp_path: Path) -> Iterator[str]:
    """The endpoints on this test's database under gunicorn, 2 workers x 4 threads (the
    documented server), with the default settings; their base URL."""
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "gunicorn", "tests.endpoints.gunicorn_app:app"),
                *("--bind", "127.0.0.1:0", "--workers", "2", "--threads", "4"),
                *("--worker-class", "gthread", "--log-level", "info"),
            ],
            cwd=ROOT,
            env={
                **os.environ,
                "TASKTOOLKIT_TEST_DB_URL": engine.url.render_as_string(hide_password=False),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _until(lambda: len(re.findall(r"Booting worker", log.read_text())) == 2, "2 workers")
        found = re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", log.read_text())
        assert found is not None, log.read_text()
        yield found.group(1)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _http_get(base: str, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=120)
    try:
        connection.request("GET", path, headers={**A, **headers})
        reply = connection.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        connection.close()


def test_under_gunicorn_a_client_holding_16_waits_starves_no_other_request(
    gunicorn: str, one: OneTask, session_factory: sessionmaker[Session]
) -> None:
    with ThreadPoolExecutor(16) as pool:
        waits = [
            pool.submit(_http_get, gunicorn, one.paths["operation"], Prefer="wait=30")
            for _ in range(16)
        ]
        # Each process holds its share (2 of its 4 threads); the others answer at once.
        _until(lambda: sum(w.done() for w in waits) >= 12, "the waits past the share answered")
        asked = time.monotonic()
        other = _http_get(gunicorn, "/tasks?state=pending")
        took = time.monotonic() - asked
        still_held = sum(not w.done() for w in waits)
        finish(session_factory, one.task_id)
        replies = [w.result(timeout=60) for w in waits]
    assert other[0] == 200 and json.loads(other[2])["tasks"]
    assert still_held >= 1  # answered while waits were held, not after them
    assert {s for s, _, _ in replies} == {200}
    held = [json.loads(b) for _, h, b in replies if h.get("Preference-Applied") == "wait=30"]
    assert 1 <= len(held) <= 4  # at most 2 a process; the others answered at once
    assert sum("Preference-Applied" not in h for _, h, _ in replies) == 16 - len(held)
    assert {r["operation"]["state"] for r in held} == {"succeeded"}
    assert took < 5, f"an unrelated GET waited {took:.1f} s behind the held waits"
    print(f"\n[exhaustion] 16 waits held by one client: {len(held)} held, the others answered")
    print(f"  at once; an unrelated GET answered in {took * 1000:.0f} ms meanwhile")
