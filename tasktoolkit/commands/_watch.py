"""``tasktoolkit watch``: an operation's tasks, live, until it ends.

By id, it reads the database (``--db-url``) every ``--interval``; by its
``Operation-Location`` URL, it reads the API, each request waiting for a change
(``Prefer: wait``). It draws the views the API shows (:mod:`tasktoolkit.views`).

Example::

    tasktoolkit watch req-8c5a... --db-url sqlite:///app.db
    tasktoolkit watch https://api.example/operations/req-8c5a... --header "X-Auth-Token: ..."
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import unicodedata
from datetime import timedelta
from typing import Any, TextIO
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit.commands._common import (
    EXIT_OK,
    EXIT_OPERATION_FAILED,
    CommandError,
    command,
    duration_option,
    first_line,
    toolkit,
)
from tasktoolkit.commands._http import header
from tasktoolkit.orm import Scope, get_operation, operation_tasks
from tasktoolkit.views import operation_view

__all__ = ["add_parser"]

_EVERYONE = Scope(all_projects=True)
#: The longest wait asked of the API per request (the server caps it too).
_HTTP_WAIT = 30


def add_parser(commands: Any) -> None:
    """Add ``watch`` to ``commands`` (the main parser's subparsers)."""
    about = "Show an operation's tasks live until it ends."
    parser = command(commands, "watch", about, run)
    parser.add_argument(
        "request_id",
        metavar="OPERATION",
        help="the operation's id (read from --db-url), or its Operation-Location URL (read "
        "through the API, waiting with Prefer: wait)",
    )
    duration_option(
        parser,
        "--interval",
        "between reads of the database (default 1s)",
        default=timedelta(seconds=1),
    )
    duration_option(parser, "--timeout", "give up after")
    parser.add_argument(
        "--header",
        type=header,
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="send this header with every request of a URL (X-Auth-Token: ...); repeatable",
    )


def run(args: argparse.Namespace) -> int:
    if args.request_id.startswith(("http://", "https://")):
        return _watch_url(args)
    if args.header:
        raise CommandError("--header is for an operation's URL, not its id")
    with toolkit(args) as kit:
        return _watch_database(kit.sessions, args)


def _until(args: argparse.Namespace) -> float | None:
    return None if args.timeout is None else time.monotonic() + args.timeout.total_seconds()


def _watch_database(sessions: sessionmaker[Session], args: argparse.Namespace) -> int:
    deadline = _until(args)
    screen = _Screen(sys.stdout)
    while True:
        with sessions() as session:
            operation = get_operation(session, args.request_id, scope=_EVERYONE)
            tasks = operation_tasks(session, args.request_id, scope=_EVERYONE)
            state = _show(screen, operation_view(operation, admin=True, tasks=tasks))
        if state != "running":
            return EXIT_OK if state == "succeeded" else EXIT_OPERATION_FAILED
        if deadline is not None and time.monotonic() >= deadline:
            raise CommandError(f"{args.request_id} is still running after --timeout")
        # Polling the database is this command's job: it waits for other processes.
        time.sleep(args.interval.total_seconds())


def _watch_url(args: argparse.Namespace) -> int:
    """Follow an operation through the API: each GET waits (``Prefer: wait``) for a change.

    A server that did not hold the wait (no ``Preference-Applied``: it holds as
    many as it can already) is asked again after its ``Retry-After``.
    """
    url: str = args.request_id
    deadline = _until(args)
    screen = _Screen(sys.stdout)
    etag: str | None = None
    state = ""
    while True:
        left = _HTTP_WAIT if deadline is None else max(0.0, deadline - time.monotonic())
        # The first read shows where it is at once; the next ones wait for a change.
        wait = 0 if state == "" else max(1, int(min(_HTTP_WAIT, left)))
        headers = {**dict(args.header), "Accept": "application/json", "Prefer": f"wait={wait}"}
        if etag is not None:
            headers["If-None-Match"] = etag
        document, etag, replied = _get(url, headers, timeout=wait + 30, etag=etag)
        if document is not None:
            if not isinstance(document.get("operation"), dict):
                raise CommandError(f"{url} is not an operation's URL")
            state = _show(screen, document["operation"])
        if state != "running":
            return EXIT_OK if state == "succeeded" else EXIT_OPERATION_FAILED
        if deadline is not None and time.monotonic() >= deadline:
            raise CommandError(f"{url} is still running after --timeout")
        if wait and "Preference-Applied" not in replied:
            left = _HTTP_WAIT if deadline is None else max(0.0, deadline - time.monotonic())
            time.sleep(min(_retry_after(replied), left))


def _retry_after(headers: Any) -> float:
    try:
        return max(1.0, float(headers.get("Retry-After", 1)))
    except ValueError:
        return 1.0


def _get(
    url: str, headers: dict[str, str], *, timeout: float, etag: str | None
) -> tuple[dict[str, Any] | None, str | None, Any]:
    """The JSON document at ``url``, its ETag and the response's headers; ``None`` when
    unchanged (304)."""
    try:
        with urlopen(Request(url, headers=headers), timeout=timeout) as response:
            document: dict[str, Any] = json.load(response)
            return document, response.headers.get("ETag"), response.headers
    except HTTPError as error:
        if error.code == 304:
            return None, etag, error.headers
        detail = _error_detail(error)
        raise CommandError(f"{url}: HTTP {error.code}{detail}") from None
    except URLError as error:
        raise CommandError(f"cannot reach {url}: {error.reason}") from None
    except (OSError, ValueError) as error:
        raise CommandError(f"{url}: {first_line(error)}") from None


def _error_detail(error: HTTPError) -> str:
    try:
        return f": {json.load(error)['errors'][0]['detail']}"
    except (ValueError, KeyError, IndexError, TypeError):
        return ""


def _show(screen: _Screen, operation: dict[str, Any]) -> str:
    """Draw an operation (its view) and its tasks; its state."""
    status = operation.get("http_status")
    header = f"{operation.get('id')} {operation.get('method')} {operation.get('path')}: " + str(
        operation.get("state")
    )
    if status is not None:
        header += f" (HTTP {status})"
    lines = [header]
    for task in operation.get("tasks") or []:
        lines += [_task_line(task), *_attempt_lines(task)]
    screen.show(lines)
    return str(operation.get("state"))


def _task_line(task: dict[str, Any]) -> str:
    progress = "" if task.get("progress") is None else f"{task['progress']:>3}%"
    error = task.get("error") or {}
    detail = error.get("message") if task.get("state") == "failed" else task.get("message")
    where = f"{task.get('resource_type')}/{task.get('resource_id')}"
    name, state = task.get("name") or "", task.get("state") or ""
    return f"  {name:<24} {where:<45} {state:<9} {progress:>4}  {detail or ''}".rstrip()


def _attempt_lines(task: dict[str, Any]) -> list[str]:
    """One line per attempt of a task (its view) that started more than once, or
    waits to start again."""
    attempts = task.get("attempts") or []
    waiting = task.get("not_before")
    if len(attempts) < 2 and not waiting:
        return []
    lines = []
    for attempt in attempts:
        error = attempt.get("error") or {}
        why = f" {error.get('code')}: {error.get('message')}" if error else ""
        where = f" on {attempt['host']}" if attempt.get("host") else ""
        outcome = attempt.get("outcome") or "running"
        lines.append(f"    attempt {attempt.get('number')}{where}: {outcome}{why}")
    if waiting:
        lines.append(f"    next attempt not before {waiting}")
    return lines


def _clip(line: str, width: int) -> str:
    """``line`` cut to ``width`` columns of a terminal (a wide character takes two)."""
    used = 0
    for index, char in enumerate(line):
        if unicodedata.combining(char):
            continue
        used += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
        if used > width:
            return line[:index]
    return line


class _Screen:
    """On a terminal, redraws the block in place, each line cut to the terminal's width
    (a line that wrapped would take two rows, and the redraw would climb one short);
    elsewhere prints lines that changed, whole."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.lines: list[str] = []

    def width(self) -> int:
        """The terminal's width now (it may have been resized since the last draw)."""
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError):
            return shutil.get_terminal_size().columns

    def show(self, lines: list[str]) -> None:
        if self.tty:
            if self.lines:
                self.stream.write(f"\x1b[{len(self.lines)}F\x1b[J")
            width = self.width()
            self.stream.write("".join(_clip(line, width) + "\n" for line in lines))
        else:
            seen = set(self.lines)
            self.stream.write("".join(line + "\n" for line in lines if line not in seen))
        self.stream.flush()
        self.lines = lines
