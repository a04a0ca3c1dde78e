"""``tasktoolkit tasks ...`` and ``tasktoolkit operations ...``: list, show, cancel, retry.

Each reads the database (``--db-url``, as an operator: every project, hosts
and tracebacks shown) or asks a service that mounts the endpoints (``--url``,
``--os-cloud``, ``--os-service-type``: as the caller the credentials say).
Both print the views the API shows (:mod:`tasktoolkit.views`), with
``-f table|json|value|csv`` and ``-c COLUMN``. A list's filters are the
endpoints' own query parameters, checked by the same rules in both modes.

An action on tasks or operations is one row of :data:`ACTIONS`: its name, its
arguments, and what it does on the database and over HTTP.

Example::

    tasktoolkit tasks list --db-url sqlite:///app.db --state failed -c id -c name -c error
    tasktoolkit operations show req-8c5a... --url http://127.0.0.1:9696 -f json
    tasktoolkit tasks cancel 1f0c... --os-cloud devstack --os-service-type network
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy.orm import Session

from tasktoolkit.commands._common import (
    EXIT_OK,
    PROG,
    CommandError,
    Parser,
    command,
    toolkit,
)
from tasktoolkit.commands._http import Api, ApiError, api_of, http_arguments, uses_http
from tasktoolkit.commands._output import output_arguments, print_list, print_one
from tasktoolkit.endpoints._params import OPERATION_LIST, TASK_LIST, ListKind, parse_list_query
from tasktoolkit.orm import (
    ListParams,
    Task,
    cancel_task,
    get_operation,
    get_task,
    list_operations,
    list_tasks,
    operation_tasks,
)
from tasktoolkit.orm._queries import ALL_PROJECTS
from tasktoolkit.orm._registry import Waits, waits_of
from tasktoolkit.orm._transitions import cancel_operation, rerun_operation, rerun_task
from tasktoolkit.views import operation_view, task_view

__all__ = ["ACTIONS", "FILTERS", "KINDS", "Action", "Filter", "Kind", "Shown", "add_parser"]

View = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Kind:
    """Tasks or operations: how the commands name, list and show them.

    :param name: the command and the endpoints' collection (``tasks``).
    :param one: one record's key in a document (``task``).
    :param columns: what ``list`` shows when no ``-c`` is given.
    :param list_kind: the list's query parameters, as the endpoints check them.
    """

    name: str
    one: str
    columns: tuple[str, ...]
    list_kind: ListKind

    def check_id(self, ident: str) -> str:
        """``ident`` if it can be one of these records' ids (as the endpoints check a
        marker), else a not-found error."""
        if not self.list_kind.is_record_id(ident):
            raise CommandError(f"no {self.one} {ident!r}")
        return ident


TASKS = Kind(
    "tasks",
    "task",
    ("id", "name", "resource_type", "resource_id", "state", "progress", "updated_at"),
    TASK_LIST,
)
OPERATIONS = Kind(
    "operations",
    "operation",
    ("id", "method", "path", "state", "http_status", "task_counts", "created_at"),
    OPERATION_LIST,
)
#: The kinds of record with commands of their own.
KINDS: tuple[Kind, ...] = (TASKS, OPERATIONS)


@dataclass(frozen=True, slots=True)
class Filter:
    """One option of ``list``: the endpoints' query parameter ``param``."""

    flag: str
    param: str
    help: str
    kinds: tuple[str, ...] = ("tasks", "operations")
    repeatable: bool = False
    choices: Callable[[Kind], Sequence[str]] | None = None


#: The options of ``list``, each the endpoints' query parameter of the same meaning.
FILTERS: tuple[Filter, ...] = (
    Filter(
        "--state",
        "state",
        "in this state (or 'active'; comma-separated or repeated)",
        repeatable=True,
    ),
    Filter("--name", "name", "of this task name", kinds=("tasks",)),
    Filter("--request-id", "request_id", "of this operation (req-<uuid>)"),
    Filter("--resource-type", "resource_type", "on resources of this type"),
    Filter("--resource-id", "resource_id", "on the resource of this id"),
    Filter("--action", "action", "of this route action", kinds=("operations",)),
    Filter("--method", "method", "of this HTTP method", kinds=("operations",)),
    Filter("--changes-since", "changes-since", "updated at or after this ISO 8601 time"),
    Filter("--changes-before", "changes-before", "updated at or before this ISO 8601 time"),
    Filter(
        "--limit",
        "limit",
        f"the most records (default {ListParams.DEFAULT_LIMIT}, at most {ListParams.MAX_LIMIT})",
    ),
    Filter("--marker", "marker", "after this record (the last id of the previous page)"),
    Filter(
        "--sort-key",
        "sort_key",
        "sort by (then by id; default created_at)",
        choices=lambda kind: kind.list_kind.sort_keys,
    ),
    Filter(
        "--sort-dir", "sort_dir", "sort direction (default desc)", choices=lambda _: ("asc", "desc")
    ),
)


@dataclass(frozen=True, slots=True)
class Shown:
    """What an action prints: ``records`` (a list) or ``record`` (one).

    :param more: another page follows: the list's last id, its ``--marker``.
    """

    records: list[View] | None = None
    record: View | None = None
    more: str | None = None


@dataclass(frozen=True, slots=True)
class Action:
    """One action on tasks and operations (``list``, ``show``, ``cancel``, ...).

    :param arguments: adds the action's own arguments to its parser.
    :param database: does it in a session of the database (as an operator).
    :param http: does it through the service's API.
    """

    name: str
    about: Callable[[Kind], str]
    arguments: Callable[[argparse.ArgumentParser, Kind], None]
    database: Callable[[Session, Kind, argparse.Namespace], Shown]
    http: Callable[[Api, Kind, argparse.Namespace], Shown]


# -- list ------------------------------------------------------------------------


def _list_arguments(parser: argparse.ArgumentParser, kind: Kind) -> None:
    group = parser.add_argument_group("filters (the endpoints' query parameters)")
    for one in FILTERS:
        if kind.name in one.kinds:
            group.add_argument(
                one.flag,
                dest=f"filter_{one.param}",
                action="append" if one.repeatable else "store",
                choices=None if one.choices is None else one.choices(kind),
                metavar=None if one.choices else one.flag[2:].upper().replace("-", "_"),
                help=one.help,
            )
    output_arguments(parser)


def _query(kind: Kind, args: argparse.Namespace) -> str:
    """The list's query string, as ``GET /tasks`` takes it."""
    pairs: list[tuple[str, str]] = []
    for one in FILTERS:
        value = getattr(args, f"filter_{one.param}", None) if kind.name in one.kinds else None
        if value is not None:
            pairs += [(one.param, v) for v in (value if one.repeatable else [value])]
    return urlencode(pairs)


def _list_database(session: Session, kind: Kind, args: argparse.Namespace) -> Shown:
    # The host's resource types are the host's: the database takes any.
    rules = replace(kind.list_kind, check_resource_type=False)
    params, _ = parse_list_query(_query(kind, args), rules)
    if kind is TASKS:
        tasks = list_tasks(session, params, scope=ALL_PROJECTS)
        waits = _waits(session, tasks.records)
        views = [task_view(t, admin=True, waits=waits) for t in tasks.records]
        return _page(views, more=tasks.has_more)
    operations = list_operations(session, params, scope=ALL_PROJECTS)
    views = [operation_view(o, admin=True) for o in operations.records]
    return _page(views, more=operations.has_more)


def _list_http(api: Api, kind: Kind, args: argparse.Namespace) -> Shown:
    _, document = api.request("GET", f"/{kind.name}", _query(kind, args))
    links = document.get(f"{kind.name}_links")
    more = isinstance(links, list) and any(
        isinstance(link, dict) and link.get("rel") == "next" for link in links
    )
    return _page(_records_of(document, kind.name), more=more)


def _page(views: list[View], *, more: bool) -> Shown:
    return Shown(records=views, more=str(views[-1].get("id")) if more and views else None)


# -- show ------------------------------------------------------------------------


def _id_arguments(parser: argparse.ArgumentParser, kind: Kind) -> None:
    what = "the task's id" if kind is TASKS else "the operation's id (req-<uuid>)"
    parser.add_argument("id", metavar=kind.one.upper(), help=what)


def _show_arguments(parser: argparse.ArgumentParser, kind: Kind) -> None:
    _id_arguments(parser, kind)
    output_arguments(parser)


def _show_database(session: Session, kind: Kind, args: argparse.Namespace) -> Shown:
    ident = kind.check_id(args.id)
    if kind is TASKS:
        task = get_task(session, ident, scope=ALL_PROJECTS)
        return Shown(record=task_view(task, admin=True, waits=_waits(session, [task])))
    operation = get_operation(session, ident, scope=ALL_PROJECTS)
    tasks = operation_tasks(session, ident, scope=ALL_PROJECTS)
    waits = _waits(session, tasks)
    return Shown(record=operation_view(operation, admin=True, tasks=tasks, waits=waits))


def _waits(session: Session, tasks: Sequence[Task]) -> Waits | None:
    """Why the pending ones among ``tasks`` wait (``waiting``), as the endpoints say it."""
    return waits_of(session, tasks)


def _show_http(api: Api, kind: Kind, args: argparse.Namespace) -> Shown:
    _, document = api.request("GET", f"/{kind.name}/{quote(args.id, safe='')}")
    return Shown(record=_record_of(document, kind.one))


# -- cancel ----------------------------------------------------------------------


def _cancel_arguments(parser: argparse.ArgumentParser, kind: Kind) -> None:
    _id_arguments(parser, kind)
    if kind is TASKS:
        parser.add_argument(
            "--collection",
            metavar="NAME",
            help="over HTTP: the collection the task's resource is mounted under (ports); "
            "by default, found in the service's openapi.json",
        )
    output_arguments(parser)


def _acting(
    on_task: Callable[[Session, str], Task], on_operation: Callable[[Session, str], object]
) -> Callable[[Session, Kind, argparse.Namespace], Shown]:
    """An action on the database (as an operator): ``on_task`` or ``on_operation`` on the
    record named (not found: as the API says it), committed; what it left, shown."""

    def act(session: Session, kind: Kind, args: argparse.Namespace) -> Shown:
        ident = kind.check_id(args.id)
        if kind is TASKS:
            get_task(session, ident, scope=ALL_PROJECTS)
            task = on_task(session, ident)
            session.commit()
            return Shown(record=task_view(task, admin=True, waits=_waits(session, [task])))
        get_operation(session, ident, scope=ALL_PROJECTS)
        on_operation(session, ident)
        session.commit()
        return _show_database(session, kind, args)

    return act


#: A resource's cancel in the document of what a service mounts (``/ports/...``).
_CANCEL_PATH = re.compile(r"/([^/{}]+)/\{resource_id\}/tasks/\{task_id\}/cancel\Z")


def _cancel_http(api: Api, kind: Kind, args: argparse.Namespace) -> Shown:
    ident = quote(args.id, safe="")
    if kind is OPERATIONS:
        _, document = api.request("POST", f"/operations/{ident}/cancel")
        return Shown(record=_record_of(document, kind.one))
    # A task is cancelled under its resource: where is that resource mounted?
    _, found = api.request("GET", f"/tasks/{ident}")
    task = _record_of(found, "task")
    resource = quote(str(task.get("resource_id")), safe="")
    collections = [args.collection] if args.collection else _collections(api, task)
    for collection in collections:
        path = f"/{quote(collection, safe='')}/{resource}/tasks/{ident}/cancel"
        try:
            _, document = api.request("POST", path)
        except ApiError as exc:
            if exc.status == 404 and len(collections) > 1:
                continue  # another type's collection: its resource is not there
            raise
        return Shown(record=_record_of(document, "task"))
    raise CommandError(
        f"no mounted collection has {task.get('resource_type')} {task.get('resource_id')}; "
        "pass --collection"
    )


def _collections(api: Api, task: Mapping[str, Any]) -> list[str]:
    """The collections whose tasks can be cancelled, the likeliest for ``task`` first."""
    try:
        _, document = api.request("GET", "/openapi.json")
    except CommandError as exc:
        raise CommandError(f"pass --collection (no openapi.json: {exc})") from None
    paths = document.get("paths")
    paths = paths if isinstance(paths, dict) else {}
    found = [m.group(1) for p in paths if (m := _CANCEL_PATH.search(p))]
    if not found:
        raise CommandError("the service's openapi.json mounts no collection; pass --collection")
    resource_type = str(task.get("resource_type"))
    return sorted(dict.fromkeys(found), key=lambda name: not name.startswith(resource_type))


# -- the documents ---------------------------------------------------------------


def _records_of(document: Mapping[str, Any], key: str) -> list[View]:
    records = document.get(key)
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise CommandError(f"the answer has no list of {key}")
    return records


def _record_of(document: Mapping[str, Any], key: str) -> View:
    record = document.get(key)
    if not isinstance(record, dict):
        raise CommandError(f"the answer has no {key}")
    return record


# -- retry -----------------------------------------------------------------------


def _retry_arguments(parser: argparse.ArgumentParser, kind: Kind) -> None:
    _id_arguments(parser, kind)
    output_arguments(parser)


def _retry_http(api: Api, kind: Kind, args: argparse.Namespace) -> Shown:
    """``POST /tasks/<id>/retry`` or ``POST /operations/<id>/retry``: the re-run is the
    request's own operation (its ``retry_of`` names the one re-run)."""
    _, document = api.request("POST", f"/{kind.name}/{quote(args.id, safe='')}/retry")
    return Shown(record=_record_of(document, kind.one))


#: Every action on tasks and operations, in the order ``--help`` lists them.
ACTIONS: tuple[Action, ...] = (
    Action(
        "list",
        lambda kind: f"List {kind.name}, newest first.",
        _list_arguments,
        _list_database,
        _list_http,
    ),
    Action(
        "show",
        lambda kind: f"Show one {kind.one}" + (" with its tasks." if kind is OPERATIONS else "."),
        _show_arguments,
        _show_database,
        _show_http,
    ),
    Action(
        "cancel",
        lambda kind: (
            "Cancel a task: a pending one at once, a running one is asked to stop."
            if kind is TASKS
            else "Cancel every active task of a running operation."
        ),
        _cancel_arguments,
        _acting(cancel_task, cancel_operation),
        _cancel_http,
    ),
    Action(
        "retry",
        lambda kind: (
            "Re-run a failed or cancelled task (its attempts kept)."
            if kind is TASKS
            else "Re-run every failed or cancelled task of an operation."
        ),
        _retry_arguments,
        # As an operator: outside a request, so the tasks re-run in no operation.
        _acting(rerun_task, rerun_operation),
        _retry_http,
    ),
)


def add_parser(commands: Any) -> None:
    """Add ``tasks`` and ``operations``, each with every action of :data:`ACTIONS`."""
    for kind in KINDS:
        about = f"{kind.name.capitalize()}: {', '.join(a.name for a in ACTIONS)}."
        parser = commands.add_parser(kind.name, help=about, description=about)
        actions = parser.add_subparsers(
            dest=f"{kind.one}_command", required=True, parser_class=Parser
        )
        for action in ACTIONS:
            sub = command(actions, action.name, action.about(kind), _runner(action, kind))
            http_arguments(sub)
            action.arguments(sub, kind)


def _runner(action: Action, kind: Kind) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if uses_http(args):
            shown = action.http(api_of(args), kind, args)
        else:
            with toolkit(args) as kit, kit.sessions() as session:
                shown = action.database(session, kind, args)
        _print(shown, kind, args)
        return EXIT_OK

    return run


def _print(shown: Shown, kind: Kind, args: argparse.Namespace) -> None:
    if shown.records is not None:
        print_list(sys.stdout, args, shown.records, default=kind.columns)
        if shown.more is not None:
            # Beside the list, not in it: a script reading the output gets the records only.
            print(f"{PROG}: more {kind.name} follow: --marker {shown.more}", file=sys.stderr)
    elif shown.record is not None:
        print_one(sys.stdout, args, shown.record)
