"""Notifications: ``tasktoolkit.operation.end`` through a real RabbitMQ (a private vhost) to a
real oslo.messaging notification listener, on SQLite, PostgreSQL and MariaDB.

The notifier reaches the broker through a TCP proxy the test can cut: a broker
that is down when an operation ends, and back later, delivers the end once a
sweep runs. The shared broker itself is never touched.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit.orm import Operation, Worker
from tasktoolkit.oslo import EVENT_TYPE, PAYLOAD_VERSION, Notifications
from tests.middleware.apps import cluster_app
from tests.middleware.stacks import Stacks
from tests.notifications import Heard, listening, rabbit_transport_url
from tests.proxy import TcpProxy

#: What version 1.0 of the payload carries: a field added, the version's minor grows.
FIELDS_1_0 = {
    "id",
    "global_request_id",
    "method",
    "path",
    "action",
    "resource_type",
    "resource_id",
    "project_id",
    "user_id",
    "state",
    "http_status",
    "error",
    "task_counts",
    "created_at",
    "updated_at",
    "finished_at",
    "expires_at",
}
#: Version 1.1 adds the resources the operation touched and the operation it re-ran.
FIELDS_1_1 = FIELDS_1_0 | {"resources", "retry_of"}
# oslo.messaging drops a connection whose first connect failed (the proxy cut) without
# closing its socket: Python warns when the socket is collected, in whichever test then.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture(scope="module")
def rabbit() -> Iterator[str]:
    """A transport URL on this run's own vhost."""
    with rabbit_transport_url() as url:
        yield url


@pytest.fixture(scope="module")
def heard(rabbit: str) -> Iterator[Heard]:
    """A notification listener on ``notifications``."""
    with listening(rabbit) as found:
        yield found


@pytest.fixture
def proxy(rabbit: str) -> Iterator[TcpProxy]:
    """A TCP proxy in front of the broker, which the test can cut."""
    parts = urlsplit(rabbit)
    made = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    yield made
    made.close()


@pytest.fixture
def notifications(
    engine: Any, rabbit: str, proxy: TcpProxy
) -> Iterator[Callable[..., Notifications]]:
    """``notifications(**options)``: a hook sending through the proxy; closed after."""
    made: list[Notifications] = []
    parts = urlsplit(rabbit)
    through = urlunsplit(parts._replace(netloc=f"guest:guest@127.0.0.1:{proxy.port}"))

    def make(**options: Any) -> Notifications:
        hook = Notifications(engine, url=through, publisher_id="tasktoolkit:test", **options)
        made.append(hook)
        return hook

    yield make
    for hook in made:
        hook.close()
    gc.collect()  # the sockets of the failed connections, while this test's filter holds


@pytest.fixture
def stacks(engine: Any) -> Iterator[Stacks]:
    made = Stacks(engine)
    yield made
    made.close()


def _notified_at(session_factory: sessionmaker[Session], operation_id: str) -> Any:
    with session_factory() as session:
        operation = session.get(Operation, operation_id)
        assert operation is not None
        return operation.notified_at


def _run_tasks(engine: Any, names: list[str]) -> None:
    if not names:
        return
    worker = Worker(engine, names)
    try:
        while (job := worker.claim()) is not None:
            with job:
                pass
    finally:
        worker.close()


@pytest.mark.parametrize(
    ("path", "tasks", "state", "status"),
    [
        pytest.param("/nothing", [], "succeeded", 200, id="ended-by-its-response"),
        pytest.param("/fail", [], "failed", 409, id="failed-by-its-response"),
        pytest.param("/clusters", ["provision"], "succeeded", 201, id="ended-by-its-last-task"),
    ],
)
def test_an_operation_end_is_notified_with_its_view(
    stacks: Stacks,
    session_factory: sessionmaker[Session],
    engine: Any,
    notifications: Callable[..., Notifications],
    heard: Heard,
    path: str,
    tasks: list[str],
    state: str,
    status: int,
) -> None:
    hook = notifications(sweep_after=0)
    app = stacks.test_app(
        cluster_app(session_factory, task_names=tasks), hooks=[hook], durable=True
    )
    response = app.post(path, headers={"X-Project-Id": "p1"}, status=status)
    operation_id = response.headers["X-Request-Id"]
    _run_tasks(engine, tasks)

    message = heard.wait_for(operation_id)
    assert message["event_type"] == EVENT_TYPE == "tasktoolkit.operation.end"
    assert message["publisher_id"] == "tasktoolkit:test"
    assert message["ctxt"]["request_id"] == operation_id
    assert message["ctxt"]["project_id"] == "p1"
    payload = message["payload"]
    assert payload["tasktoolkit_object.name"] == "OperationPayload"
    assert payload["tasktoolkit_object.namespace"] == "tasktoolkit"
    assert payload["tasktoolkit_object.version"] == PAYLOAD_VERSION == "1.1"
    data = payload["tasktoolkit_object.data"]
    assert set(data) == FIELDS_1_1
    assert (data["state"], data["http_status"], data["project_id"]) == (state, status, "p1")
    assert data["task_counts"]["succeeded"] == len(tasks)

    assert hook.flush()
    assert _notified_at(session_factory, operation_id) is not None
    # Marked: a sweep sends it no second time.
    assert hook.sweep() == 0
    assert len(heard.of(operation_id)) == 1


def test_an_end_while_the_broker_is_down_is_sent_by_a_sweep_once_it_is_back(
    stacks: Stacks,
    session_factory: sessionmaker[Session],
    notifications: Callable[..., Notifications],
    heard: Heard,
    proxy: TcpProxy,
) -> None:
    hook = notifications(sweep_after=0)
    app = stacks.test_app(cluster_app(session_factory, task_names=[]), hooks=[hook])
    first = app.post("/nothing", headers={"X-Project-Id": "p1"}).headers["X-Request-Id"]
    heard.wait_for(first)  # the broker's connection is made and used

    with proxy.down():
        response = app.post("/nothing", headers={"X-Project-Id": "p1"}, status=200)
        operation_id = response.headers["X-Request-Id"]
        assert hook.flush()  # tried, and failed: nothing reached the broker
        assert _notified_at(session_factory, operation_id) is None
        assert hook.sweep() == 0  # still down: left for a later sweep
    assert _notified_at(session_factory, operation_id) is None

    assert hook.sweep() == 1
    message = heard.wait_for(operation_id)
    assert message["payload"]["tasktoolkit_object.data"]["state"] == "succeeded"
    assert _notified_at(session_factory, operation_id) is not None
    assert hook.sweep() == 0
    assert len(heard.of(operation_id)) == 1


def test_an_end_not_yet_settled_is_left_to_the_process_that_finished_it(
    stacks: Stacks,
    session_factory: sessionmaker[Session],
    notifications: Callable[..., Notifications],
    proxy: TcpProxy,
) -> None:
    hook = notifications(sweep_after="1h")
    app = stacks.test_app(cluster_app(session_factory, task_names=[]), hooks=[hook])
    with proxy.down():
        operation_id = app.post("/nothing").headers["X-Request-Id"]
        assert hook.flush()
    assert hook.sweep() == 0
    assert _notified_at(session_factory, operation_id) is None


@pytest.mark.parametrize(
    ("options", "error"),
    [
        pytest.param({"topics": "notifications"}, TypeError, id="topics-a-string"),
        pytest.param({"topics": []}, TypeError, id="no-topic"),
        pytest.param({"retry": -2}, ValueError, id="retry-below-for-ever"),
        pytest.param({"batch_size": 0}, ValueError, id="no-batch"),
        pytest.param({"sweep_after": "soon"}, ValueError, id="sweep-after-not-a-duration"),
    ],
)
def test_bad_options_are_refused(engine: Any, options: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        Notifications(engine, url="rabbit://guest:guest@127.0.0.1:5672/", **options)
