"""Bad input: a clear typed error each time, and nothing written."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import MetaData, String, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from tasktoolkit import errors
from tasktoolkit.orm import Job, Task, TaskResource, TaskRules, Worker, spawn_tasks
from tasktoolkit.orm._records import tasks_table
from tasktoolkit.orm._resource import resource_types
from tasktoolkit.orm._states import can_transition, parse_operation_state, parse_task_state
from tasktoolkit.orm._transitions import fail_task, report_progress, transition
from tests.models import Cluster, Node
from tests.orm._db import spawn, task_count, task_row

# -- state names --------------------------------------------------------------

BAD_STATES = [
    pytest.param("bogus", id="bogus"),
    pytest.param("PENDING", id="upper-case"),
    pytest.param("", id="empty"),
    pytest.param(" running", id="leading-space"),
    pytest.param(None, id="none"),
    pytest.param(1, id="int"),
    pytest.param("active", id="filter-alias-not-a-state"),
]


@pytest.mark.parametrize("value", BAD_STATES)
def test_unknown_state_name_parsing(value: Any) -> None:
    with pytest.raises(errors.InvalidStateError) as info:
        parse_task_state(value)
    assert info.value.status == 400 and "pending" in str(info.value)
    with pytest.raises(errors.InvalidStateError):
        parse_operation_state(value)
    with pytest.raises(errors.InvalidStateError):
        can_transition(value, "running")
    with pytest.raises(errors.InvalidStateError):
        can_transition("pending", value)


# ``expected=None`` is the default (no expectation), so it is no bad input there.
BAD_TRANSITION_STATES = [
    pytest.param("to", p.values[0], id=f"target-{p.id}") for p in BAD_STATES
] + [
    pytest.param("expected", p.values[0], id=f"expected-{p.id}")
    for p in BAD_STATES
    if p.id != "none"
]


@pytest.mark.parametrize(("where", "value"), BAD_TRANSITION_STATES)
def test_unknown_state_in_transition_changes_nothing(
    session: Session, engine: Engine, node: Node, value: Any, where: str
) -> None:
    (task,) = spawn(session, node, "boot")
    before = task_row(engine, task.id)
    with pytest.raises(errors.InvalidStateError):
        if where == "to":
            transition(session, task.id, value)
        else:
            transition(session, task.id, "running", expected=value)
    session.commit()
    assert task_row(engine, task.id) == before


BAD_RULES = [
    pytest.param({"retries": 3}, id="unknown-option"),
    pytest.param({"start_timeout": timedelta(seconds=-1)}, id="negative-start-timeout"),
    pytest.param({"start_timeout": 3600}, id="start-timeout-not-a-duration"),
    pytest.param({"start_timeout": timedelta(0)}, id="start-timeout-zero"),
    pytest.param({"heartbeat_timeout": None}, id="heartbeat-timeout-none"),
    pytest.param({"heartbeat_timeout": timedelta(milliseconds=10)}, id="heartbeat-under-1s"),
    pytest.param({"max_attempts": 0}, id="max-attempts-zero"),
    pytest.param({"max_attempts": True}, id="max-attempts-bool"),
    pytest.param({"max_attempts": "3"}, id="max-attempts-string"),
    pytest.param({"max_attempts": 10**6}, id="max-attempts-absurd"),
    pytest.param({"backoff": timedelta(seconds=-1)}, id="negative-backoff"),
    pytest.param(
        {"backoff": timedelta(minutes=5), "backoff_cap": timedelta(minutes=1)},
        id="backoff-cap-under-base",
    ),
    pytest.param({"jitter": 1.5}, id="jitter-over-1"),
    pytest.param({"jitter": "0.5"}, id="jitter-string"),
    pytest.param({"ttl": timedelta(-1)}, id="negative-ttl"),
    pytest.param({"ttl": 3600}, id="ttl-not-a-timedelta"),
    pytest.param({"ttl": timedelta(days=4000)}, id="absurd-ttl"),
    pytest.param({"ttl_by_state": {"running": timedelta(1)}}, id="ttl-of-an-active-state"),
    pytest.param({"ttl_by_state": {"bogus": timedelta(1)}}, id="ttl-of-an-unknown-state"),
    pytest.param({"ttl_by_state": [("failed", timedelta(1))]}, id="ttl-by-state-not-a-mapping"),
]


@pytest.mark.parametrize("rules", BAD_RULES)
def test_bad_task_rules_are_refused_at_declaration(rules: dict[str, Any]) -> None:
    with pytest.raises(errors.InvalidTaskRulesError) as info:
        TaskRules(**rules)
    assert info.value.status == 400


# -- progress -------------------------------------------------------------------

BAD_PROGRESS = [
    pytest.param(-1, id="negative"),
    pytest.param(101, id="over-100"),
    pytest.param(50.5, id="float"),
    pytest.param(50.0, id="whole-float"),
    pytest.param("50", id="string"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param([50], id="list"),
]


@pytest.mark.parametrize("value", BAD_PROGRESS)
@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda s, t, v: report_progress(s, t, v), id="report_progress"),
        pytest.param(
            lambda s, t, v: report_progress(s, t, v, host="h"), id="report_progress-by-worker"
        ),
    ],
)
def test_bad_progress_changes_nothing(
    session: Session,
    engine: Engine,
    node: Node,
    value: Any,
    call: Callable[[Session, str, Any], Any],
) -> None:
    (task,) = spawn(session, node, "boot")
    before = task_row(engine, task.id)
    with pytest.raises(errors.InvalidProgressError) as info:
        call(session, task.id, value)
    session.commit()
    assert info.value.status == 400
    assert task_row(engine, task.id) == before


# -- error codes ----------------------------------------------------------------

BAD_CODES = [
    pytest.param("x" * 65, id="65-characters"),
    pytest.param("", id="empty"),
    pytest.param(None, id="none"),
    pytest.param(7, id="int"),
    pytest.param("bad\x00code", id="nul"),
    pytest.param("bad\ud800code", id="lone-surrogate"),
]
FAIL_FORMS = [
    pytest.param(lambda s, j, t, c: fail_task(s, t, code=c, message="m"), id="fail_task"),
    pytest.param(
        lambda s, j, t, c: fail_task(s, t, code=c, message="m", host=j.worker.host),
        id="fail_task-held",
    ),
    pytest.param(lambda s, j, t, c: j.fail(c, "m"), id="Job.fail"),
    pytest.param(lambda s, j, t, c: j.fail(c, "m", session=s), id="Job.fail-in-session"),
]


@pytest.mark.parametrize("code", BAD_CODES)
@pytest.mark.parametrize("form", FAIL_FORMS)
def test_a_bad_error_code_is_refused_before_the_database_sees_it(
    session: Session,
    engine: Engine,
    node: Node,
    code: Any,
    form: Callable[[Session, Job, str, Any], Any],
) -> None:
    (task,) = spawn(session, node, "boot")
    job = Worker(engine, ["boot"], host="w1").claim()
    assert job is not None
    before = task_row(engine, task.id)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        with pytest.raises(errors.InvalidErrorCodeError) as info:
            form(session, job, task.id, code)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    session.commit()
    assert info.value.status == 400 and "1 to 64 characters, no NUL" in str(info.value)
    assert [s for s in statements if "tasktoolkit_tasks" in s] == []
    assert task_row(engine, task.id) == before


# -- text no database keeps -------------------------------------------------------

UNSTORABLE_TEXT = [
    pytest.param("half\x00way", "half\ufffdway", id="nul"),
    pytest.param("half\ud800way", "half\ufffdway", id="lone-surrogate"),
]


def _raise_in_job(job: Job, text: str) -> None:
    with pytest.raises(ValueError), job:  # recorded as failed, then raised on
        raise ValueError(text)


REPORTS_OF_TEXT = [
    pytest.param(lambda job, text: job.progress(10, text), "message", id="progress"),
    pytest.param(lambda job, text: job.succeed(text), "message", id="succeed"),
    pytest.param(lambda job, text: job.fail("flaky", text), "error_message", id="fail-message"),
    pytest.param(
        lambda job, text: job.fail("flaky", "m", traceback=text),
        "error_traceback",
        id="fail-traceback",
    ),
    pytest.param(_raise_in_job, "error_message", id="with-job-raises"),
]


@pytest.mark.parametrize(("text", "kept"), UNSTORABLE_TEXT)
@pytest.mark.parametrize(("report", "column"), REPORTS_OF_TEXT)
def test_text_no_database_keeps_is_recorded_replaced(
    session: Session,
    engine: Engine,
    node: Node,
    text: str,
    kept: str,
    report: Callable[[Job, str], None],
    column: str,
) -> None:
    # NUL: PostgreSQL refuses it; a lone surrogate: no driver can encode it.
    # Either lost the outcome of the work (a DataError or UnicodeEncodeError).
    (task,) = spawn(session, node, "boot")
    job = Worker(engine, ["boot"], host="w1").claim()
    assert job is not None
    report(job, text)
    assert kept in task_row(engine, task.id)[column]


# -- spawning -------------------------------------------------------------------


def test_spawn_on_transient_resource(session: Session, engine: Engine, cluster: Cluster) -> None:
    transient = Node(cluster_id=cluster.id)
    with pytest.raises(errors.TransientResourceError) as info:
        transient.spawn_task("boot")
    assert info.value.status == 400
    with pytest.raises(errors.TransientResourceError):
        spawn_tasks(session, [(transient, "boot")])
    session.commit()
    assert task_count(engine) == 0


def test_spawn_on_deleted_resource(session: Session, engine: Engine, node: Node) -> None:
    session.delete(node)
    session.flush()
    with pytest.raises(errors.TransientResourceError):
        node.spawn_task("boot")
    session.commit()  # now detached, and gone from the database
    with pytest.raises(errors.TransientResourceError):
        node.spawn_task("boot")
    with pytest.raises(errors.TransientResourceError):
        spawn_tasks(session, [(node, "boot")])
    assert task_count(engine) == 0


def test_spawn_on_detached_resource(session: Session, engine: Engine, node: Node) -> None:
    session.expunge(node)
    with pytest.raises(errors.TransientResourceError):
        node.spawn_task("boot")
    with pytest.raises(errors.TransientResourceError):
        spawn_tasks(session, [(node, "boot")])
    session.commit()
    assert task_count(engine) == 0


def test_spawn_with_a_resource_of_another_session(
    session: Session, other_session: Session, engine: Engine, node: Node
) -> None:
    with pytest.raises(errors.TransientResourceError):
        spawn_tasks(other_session, [(node, "boot")])
    other_session.commit()
    assert task_count(engine) == 0


def test_spawn_on_something_that_is_not_a_resource(session: Session, engine: Engine) -> None:
    with pytest.raises(errors.NotAResourceError):
        spawn_tasks(session, [(object(), "boot")])  # type: ignore[list-item]
    with pytest.raises(errors.NotAResourceError):
        spawn_tasks(session, [(Task(), "boot")])  # type: ignore[list-item]
    assert task_count(engine) == 0


BAD_TASK_NAMES = [
    pytest.param("", id="empty"),
    pytest.param("has space", id="space"),
    pytest.param("-leading-dash", id="leading-dash"),
    pytest.param("x" * 129, id="too-long"),
    pytest.param("tab\there", id="tab"),
    pytest.param("newline\n", id="trailing-newline"),
    pytest.param("émoji", id="non-ascii"),
    pytest.param("semi;colon", id="semicolon"),
    pytest.param(None, id="none"),
    pytest.param(5, id="int"),
    pytest.param(b"boot", id="bytes"),
]


@pytest.mark.parametrize("name", BAD_TASK_NAMES)
def test_bad_task_name(session: Session, engine: Engine, node: Node, name: Any) -> None:
    with pytest.raises(errors.InvalidTaskNameError) as info:
        node.spawn_task(name)
    assert info.value.status == 400
    with pytest.raises(errors.InvalidTaskNameError):
        node.spawn_tasks(["good", name])  # one bad name: none is written
    session.commit()
    assert task_count(engine) == 0


def test_longest_and_punctuated_names_are_fine(session: Session, node: Node) -> None:
    tasks = spawn(session, node, "x" * 128, "a.b:c-d_e", "0start")
    assert [len(t.name) for t in tasks] == [128, 9, 6]


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"rules": {"max_attempts": 2}}, id="rules-not-task-rules"),
        pytest.param({"max_attempts": 2}, id="rule-as-an-option"),
    ],
)
def test_bad_spawn_options(
    session: Session, engine: Engine, node: Node, options: dict[str, Any]
) -> None:
    with pytest.raises((errors.InvalidTaskOptionError, TypeError)):
        node.spawn_task("boot", **options)
    session.commit()
    assert task_count(engine) == 0


def test_bad_pair_in_a_bulk_spawn_writes_nothing(
    session: Session, engine: Engine, make_node: Callable[..., Node], cluster: Cluster
) -> None:
    good = make_node("good")
    transient = Node(cluster_id=cluster.id)
    with pytest.raises(errors.TransientResourceError):
        spawn_tasks(session, [(good, "boot"), (cluster, "upgrade"), (transient, "boot")])
    session.commit()
    assert task_count(engine) == 0


# -- declaring resource models ------------------------------------------------------


@pytest.fixture
def fresh_base() -> Iterator[type[DeclarativeBase]]:
    """A declarative base of its own, so a refused model leaves the test models alone.

    Checks afterwards that the refused declaration left the toolkit as it was.
    """
    columns = set(tasks_table.c.keys())
    types = resource_types()

    class FreshBase(DeclarativeBase):
        metadata = MetaData()

    yield FreshBase
    assert set(tasks_table.c.keys()) == columns
    assert resource_types() == types


def _declare(base: type[DeclarativeBase], body: dict[str, Any]) -> type:
    namespace = {
        "__tablename__": f"refused_{abs(hash(str(body))) % 10**8}",
        "__annotations__": {"id": Mapped[str]},
        "id": mapped_column(String(36), primary_key=True),
        **body,
    }
    return type("Refused", (TaskResource, base), namespace)


BAD_DECLARATIONS = [
    pytest.param({}, "must declare __resource_type__", id="no-resource-type"),
    pytest.param({"__resource_type__": "cluster"}, "declared twice", id="declared-twice"),
    pytest.param({"__resource_type__": "Port"}, "lower-case", id="upper-case"),
    pytest.param({"__resource_type__": "1port"}, "lower-case", id="leading-digit"),
    pytest.param({"__resource_type__": "_port"}, "lower-case", id="leading-underscore"),
    pytest.param({"__resource_type__": ""}, "lower-case", id="empty"),
    pytest.param({"__resource_type__": "my-port"}, "lower-case", id="dash"),
    pytest.param({"__resource_type__": "port\n"}, "lower-case", id="trailing-newline"),
    pytest.param({"__resource_type__": "p" * 40}, "lower-case", id="too-long"),
    pytest.param({"__resource_type__": 7}, "lower-case", id="not-a-string"),
    pytest.param({"__resource_type__": "request"}, "already has", id="clashes-with-request_id"),
    pytest.param({"__resource_type__": "resource"}, "already has", id="clashes-with-resource_id"),
]


@pytest.mark.parametrize(("body", "message"), BAD_DECLARATIONS)
def test_bad_resource_declaration(
    fresh_base: type[DeclarativeBase], body: dict[str, Any], message: str
) -> None:
    with pytest.raises(errors.ResourceTypeConflictError, match=message):
        _declare(fresh_base, body)


BAD_RULE_TABLES = [
    pytest.param({"boot": {"max_attempts": 2}}, "must be TaskRules", id="rules-not-task-rules"),
    pytest.param({"bad name": TaskRules()}, "not a task name", id="bad-task-name"),
    pytest.param([("boot", TaskRules())], "must map task names", id="not-a-mapping"),
    pytest.param(TaskRules(), "must map task names", id="rules-not-a-table"),
]


@pytest.mark.parametrize(("table", "message"), BAD_RULE_TABLES)
def test_bad_task_rules_declaration(
    fresh_base: type[DeclarativeBase], table: object, message: str
) -> None:
    with pytest.raises(errors.InvalidTaskRulesError, match=message):
        _declare(fresh_base, {"__resource_type__": "refused_rules", "__task_rules__": table})


def test_the_old_expiry_declaration_is_refused(fresh_base: type[DeclarativeBase]) -> None:
    body = {"__resource_type__": "refused_expiry", "__task_expiry__": object()}
    with pytest.raises(errors.InvalidTaskRulesError, match="__task_rules__"):
        _declare(fresh_base, body)


def test_composite_primary_key_refused(fresh_base: type[DeclarativeBase]) -> None:
    namespace = {
        "__tablename__": "refused_composite",
        "__resource_type__": "refused_composite",
        "__annotations__": {"a": Mapped[str], "b": Mapped[str]},
        "a": mapped_column(String(8), primary_key=True),
        "b": mapped_column(String(8), primary_key=True),
    }
    with pytest.raises(errors.ResourceTypeConflictError, match="single-column primary key"):
        type("Refused", (TaskResource, fresh_base), namespace)


def test_declared_twice_names_both_models(fresh_base: type[DeclarativeBase]) -> None:
    with pytest.raises(errors.ResourceTypeConflictError) as info:
        _declare(fresh_base, {"__resource_type__": "node"})
    assert "tests.models.Node" in str(info.value)


def test_spawn_on_a_resource_deleted_behind_the_sessions_back(
    session: Session, engine: Engine, node: Node
) -> None:
    """Another transaction deleted the row: the foreign key refuses the task."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM nodes WHERE id = :id"), {"id": node.id})
    with pytest.raises(IntegrityError):
        node.spawn_task("boot")
    session.rollback()
    assert task_count(engine) == 0
