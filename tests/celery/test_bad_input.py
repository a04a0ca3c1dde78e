"""Bad input to the Celery bridge: typed errors at binding, before any broker is reached."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine

from tasktoolkit import Toolkit
from tasktoolkit.celery import CeleryBridge, TaskFailed, check_broker_url
from tasktoolkit.errors import HandlerConflictError, InvalidBrokerError, InvalidTaskNameError
from tasktoolkit.orm import Job


@pytest.fixture(scope="module")
def backend() -> str:
    """No database is reached: one SQLite engine is enough."""
    return "sqlite"


@pytest.fixture
def toolkit() -> Iterator[Toolkit]:
    made = Toolkit(create_engine("sqlite://"))
    yield made
    made.engine.dispose()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        pytest.param("sqs://key:secret@", "not 'sqs'", id="sqs"),
        pytest.param("memory://", "not 'memory'", id="memory"),
        pytest.param("http://127.0.0.1:5672", "not 'http'", id="http"),
        pytest.param(
            "amqp://127.0.0.1//;kafka://127.0.0.1",
            "not 'kafka'",
            id="one-failover-of-another-kind",
        ),
        pytest.param("", "a broker URL is needed", id="empty"),
        pytest.param("127.0.0.1:5672", "not '127.0.0.1:5672'", id="no-scheme"),
    ],
)
def test_an_unknown_broker_scheme_is_refused(toolkit: Toolkit, url: str, says: str) -> None:
    with pytest.raises(InvalidBrokerError, match=r"RabbitMQ or Redis|broker URL") as raised:
        CeleryBridge(toolkit, url)
    assert says in str(raised.value)


def test_a_password_is_not_shown_in_the_error() -> None:
    with pytest.raises(InvalidBrokerError) as raised:
        check_broker_url("sqs://user:s3cret@host")
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("amqp://guest:guest@127.0.0.1:5672//", id="amqp"),
        pytest.param("pyamqp://127.0.0.1", id="pyamqp"),
        pytest.param("redis://127.0.0.1:6379/3", id="redis"),
        pytest.param("rediss://127.0.0.1:6380/0", id="rediss"),
        pytest.param("amqp://a//;amqp://b//", id="failover"),
    ],
)
def test_rabbitmq_and_redis_urls_are_taken(url: str) -> None:
    assert check_broker_url(url) == url


def test_a_handler_bound_twice_is_refused(toolkit: Toolkit) -> None:
    bridge = CeleryBridge(toolkit, "redis://127.0.0.1:6379/0")

    @bridge.handler("wire")
    def wire(job: Job) -> None:
        pass

    with pytest.raises(HandlerConflictError, match="'wire' already has a handler"):

        @bridge.handler("wire")
        def wire_again(job: Job) -> None:
            pass

    assert bridge.handler_of("wire") is wire
    assert bridge.names == {"wire"}


@pytest.mark.parametrize("name", ["", "two words", "-leading", 7])
def test_a_bad_task_name_is_refused(toolkit: Toolkit, name: object) -> None:
    with pytest.raises(InvalidTaskNameError):
        CeleryBridge(toolkit, "redis://127.0.0.1:6379/0", names=[name])  # type: ignore[list-item]
    bridge = CeleryBridge(toolkit, "redis://127.0.0.1:6379/0")
    with pytest.raises(InvalidTaskNameError):
        bridge.handler(name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "made_from",
    [
        pytest.param(create_engine("sqlite://"), id="an-engine"),
        pytest.param("sqlite://", id="a-url"),
    ],
)
def test_a_bridge_is_made_from_a_toolkit(made_from: object) -> None:
    with pytest.raises(TypeError, match=r"needs a tasktoolkit\.Toolkit"):
        CeleryBridge(made_from, "redis://127.0.0.1:6379/0")  # type: ignore[arg-type]


def test_names_already_bound_bind_none(toolkit: Toolkit) -> None:
    first = CeleryBridge(toolkit, "redis://127.0.0.1:6379/0", names=["wire", "boot"])
    with pytest.raises(HandlerConflictError, match="'boot' already runs on"):
        CeleryBridge(toolkit, "redis://127.0.0.1:6379/0", names=["scan", "boot"])
    second = CeleryBridge(toolkit, "redis://127.0.0.1:6379/0", names=["scan"])  # "scan" is free
    assert (first.names, second.names) == ({"wire", "boot"}, {"scan"})


def test_the_bridge_sets_what_celery_needs(toolkit: Toolkit) -> None:
    bridge = CeleryBridge(toolkit, "amqp://guest:guest@127.0.0.1:5672//")

    @bridge.handler("wire")
    def wire(job: Job) -> None:
        pass

    task = bridge.app.tasks["tasktoolkit.wire"]
    assert (task.acks_late, task.reject_on_worker_lost, task.max_retries) == (True, True, 0)
    assert (task.ignore_result, task.throws) == (False, (TaskFailed,))  # results say the truth
    assert bridge.app.conf.worker_prefetch_multiplier == 1
    assert bridge.app.conf.broker_transport_options["confirm_publish"] is True
