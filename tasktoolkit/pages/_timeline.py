"""The timeline of tasks as geometry: rows, bars and ticks, for the template to draw as SVG.

It reads the task views the JSON shows (``created_at``, ``attempts`` with
their ``started_at``, ``finished_at`` and ``outcome``, ``not_before``,
``progress``, ``message``; ``after`` and ``waiting`` when the views carry
them), never a record, so the picture and the JSON cannot disagree. Each
task is one row; each attempt one bar from its start to its finish (to now
while it runs), colored by its outcome; before the first attempt, the wait
from spawn to start; between two attempts, the backoff before the retry.

Example::

    line = timeline(view["tasks"], since=created, now=utcnow(), grouped=True)
    for row in line.rows:
        print(row.task["name"], [bar.kind for bar in row.bars])
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "Bar",
    "Group",
    "Link",
    "Row",
    "Tick",
    "Timeline",
    "duration_text",
    "parse_time",
    "timeline",
]

#: The drawing's width in SVG units; the SVG scales to the page's width.
WIDTH = 960
#: Where the bars start and end (the task names are left of them).
BARS_LEFT = 300
BARS_RIGHT = 950
ROW_HEIGHT = 22
BAR_HEIGHT = 14
AXIS_HEIGHT = 26
#: Roughly how wide one character of the timeline's text is, in SVG units.
CHAR_WIDTH = 6.2
_ACTIVE = frozenset({"pending", "running"})
#: Tick spacings, in seconds, from which the one giving at most ~8 ticks is taken.
_STEPS = (
    0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800,
    3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800,
)  # fmt: skip


def parse_time(text: object) -> datetime | None:
    """A view's time (``2024-01-31T12:00:00.123456Z``) as an aware datetime; ``None`` if none."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def utc_text(moment: datetime) -> str:
    """``2024-01-31 12:00:00.123 UTC``: how a time reads on hover."""
    return moment.astimezone(UTC).isoformat(" ", "milliseconds")[:23] + " UTC"


def duration_text(seconds: float) -> str:
    """``0.25 s``, ``12.4 s``, ``3 min 05 s``, ``2 h 03 min``: a duration for people."""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        minutes, rest = divmod(int(seconds), 60)
        return f"{minutes} min {rest:02d} s"
    hours, rest = divmod(int(seconds) // 60, 60)
    return f"{hours} h {rest:02d} min"


@dataclass(slots=True)
class Bar:
    """One span of a row.

    :param kind: ``wait`` (spawn to first start, or still pending), ``backoff``
        (an attempt's end to the next start), or ``attempt``.
    :param outcome: the class it is colored by: ``wait``, ``backoff``,
        ``running``, or an ended attempt's outcome.
    :param title: what hovering it says (times in UTC, the error).
    :param note: what it would say beside it (progress and message, an error).
    :param text: the part of ``note`` that fits, at ``text_x``.
    :param progress: the filled width of a running bar, in SVG units.
    """

    kind: str
    outcome: str
    x: float
    width: float
    title: str
    note: str = ""
    text: str = ""
    text_x: float = 0.0
    progress: float = 0.0
    number: int = 0


@dataclass(frozen=True, slots=True)
class Link:
    """A task's wait on one it runs ``after``: from that one's end to this one's start."""

    path: str
    title: str


@dataclass(frozen=True, slots=True)
class Row:
    """One task: its view, its vertical place, and its bars."""

    task: Mapping[str, Any]
    y: float
    bars: list[Bar]
    links: list[Link] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Group:
    """The header of one resource's rows (a bulk operation's)."""

    resource_type: str
    resource_id: str
    y: float


@dataclass(frozen=True, slots=True)
class Tick:
    """A time on the axis: where, and its label in UTC (the page's script shows local time)."""

    x: float
    at: str
    label: str
    title: str
    #: The ticks are less than a second apart: labels show tenths.
    fraction: bool = False


@dataclass(frozen=True, slots=True)
class Timeline:
    """Everything the SVG needs: its height, the axis, the groups and the rows."""

    height: float
    ticks: list[Tick]
    groups: list[Group]
    rows: list[Row]
    now_x: float | None
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class _Scale:
    """Times to x: ``start`` at :data:`BARS_LEFT`, ``end`` at :data:`BARS_RIGHT`."""

    start: datetime
    end: datetime

    def x(self, moment: datetime) -> float:
        span = (self.end - self.start).total_seconds()
        share = min(max((moment - self.start).total_seconds() / span, 0.0), 1.0)
        return round(BARS_LEFT + (BARS_RIGHT - BARS_LEFT) * share, 1)


def _moments(task: Mapping[str, Any]) -> Iterator[datetime]:
    for key in ("created_at", "started_at", "finished_at", "updated_at"):
        found = parse_time(task.get(key))
        if found is not None:
            yield found
    for attempt in task.get("attempts") or ():
        for key in ("started_at", "finished_at"):
            found = parse_time(attempt.get(key))
            if found is not None:
                yield found


def _ticks(scale: _Scale) -> list[Tick]:
    seconds = (scale.end - scale.start).total_seconds()
    step = next((s for s in _STEPS if seconds / s <= 8), _STEPS[-1])
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    first = -(-(scale.start - epoch).total_seconds() // step) * step
    ticks = []
    at = first
    while at <= (scale.end - epoch).total_seconds() + 1e-9:
        moment = epoch + timedelta(seconds=at)
        label = moment.strftime("%H:%M:%S" if step >= 1 else "%H:%M:%S.%f")
        ticks.append(
            Tick(
                x=scale.x(moment),
                at=moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                label=label if step >= 1 else label[:-5],
                title=utc_text(moment),
                fraction=step < 1,
            )
        )
        at += step
    return ticks


def _span_title(what: str, start: datetime, end: datetime | None, now: datetime) -> str:
    until = "now" if end is None else utc_text(end)
    taken = duration_text(((end or now) - start).total_seconds())
    return f"{what}: {utc_text(start)} to {until} ({taken})"


def _error_text(error: Mapping[str, Any] | None) -> str:
    if not error:
        return ""
    return f"{error.get('code', 'error')}: {error.get('message', '')}"


def _fit(text: str, room: float) -> str:
    """``text`` cut to what fits in ``room`` SVG units, with an ellipsis when cut."""
    fits = max(int(room / CHAR_WIDTH), 0)
    if len(text) <= fits:
        return text
    return text[: max(fits - 1, 0)] + "\u2026" if fits > 1 else ""


def _placed(bars: list[Bar]) -> list[Bar]:
    """Each bar's note written after its end, up to the next bar, or inside it when wider."""
    placed = []
    for index, bar in enumerate(bars):
        if bar.note:
            end = bar.x + bar.width
            limit = bars[index + 1].x if index + 1 < len(bars) else WIDTH
            after, inside = limit - end - 8, bar.width - 8
            x, room = (end + 4, after) if after >= inside else (bar.x + 4, inside)
            bar.text, bar.text_x = _fit(bar.note, room), round(x, 1)
        placed.append(bar)
    return placed


def _bar(kind: str, outcome: str, scale: _Scale, start: datetime, end: datetime, title: str) -> Bar:
    x = scale.x(start)
    width = max(scale.x(end) - x, 1.5)
    return Bar(kind=kind, outcome=outcome, x=x, width=round(width, 1), title=title)


def _attempt_bar(
    attempt: Mapping[str, Any], task: Mapping[str, Any], scale: _Scale, now: datetime
) -> Bar | None:
    start = parse_time(attempt.get("started_at"))
    if start is None:
        return None
    end = parse_time(attempt.get("finished_at"))
    outcome = attempt.get("outcome") or "running"
    number = int(attempt.get("number") or 0)
    what = f"attempt {number}: {outcome}"
    if attempt.get("host"):
        what += f" on {attempt['host']}"
    title = _span_title(what, start, end, now)
    error = _error_text(attempt.get("error"))
    if error:
        title += f"\n{error}"
    bar = _bar("attempt", str(outcome), scale, start, end or now, title)
    bar.number = number
    if end is None:  # the running attempt: its progress and message on the bar
        progress = int(task.get("progress") or 0)
        message = task.get("message") or ""
        filled = round(bar.width * min(max(progress, 0), 100) / 100, 1)
        bar.progress, bar.note = filled, f"{progress}% {message}".strip()
    elif outcome == "failed" and error:
        bar.note = error
    return bar


def _row_bars(task: Mapping[str, Any], scale: _Scale, now: datetime) -> list[Bar]:
    """The task's wait, attempts and backoffs, in time order."""
    bars: list[Bar] = []
    created = parse_time(task.get("created_at"))
    active = task.get("state") in _ACTIVE
    attempts = [a for a in task.get("attempts") or () if parse_time(a.get("started_at"))]
    previous_end = created
    for index, attempt in enumerate(attempts):
        start = parse_time(attempt["started_at"])
        assert start is not None  # filtered above
        if previous_end is not None and start > previous_end:
            kind = "wait" if index == 0 else "backoff"
            what = "waited to start" if index == 0 else f"backoff before attempt {index + 1}"
            bars.append(
                _bar(
                    kind,
                    kind,
                    scale,
                    previous_end,
                    start,
                    _span_title(what, previous_end, start, now),
                )
            )
        bar = _attempt_bar(attempt, task, scale, now)
        if bar is not None:
            bars.append(bar)
        previous_end = parse_time(attempt.get("finished_at"))
    if previous_end is not None and task.get("state") == "pending":
        bars.extend(_still_waiting(task, previous_end, scale, now, retry=bool(attempts)))
    elif not attempts and created is not None and not active:
        end = parse_time(task.get("finished_at")) or parse_time(task.get("updated_at")) or created
        bars.append(
            _bar(
                "wait", "wait", scale, created, end, _span_title("never started", created, end, now)
            )
        )
    if bars and not bars[-1].note:
        bars[-1].note = _row_note(task, attempts)
    return _placed(bars)


def _row_note(task: Mapping[str, Any], attempts: list[Mapping[str, Any]]) -> str:
    """What a row says after its last bar when that bar has nothing to say itself."""
    if not attempts and task.get("error"):
        return _error_text(task["error"])
    failed = [a for a in attempts if a.get("outcome") == "failed"]
    if failed:
        first = failed[0]
        times = "1 failed attempt" if len(failed) == 1 else f"{len(failed)} failed attempts"
        return f"after {times} ({_error_text(first.get('error')) or 'failed'})"
    return ""


def _still_waiting(
    task: Mapping[str, Any], since: datetime, scale: _Scale, now: datetime, *, retry: bool
) -> list[Bar]:
    """A pending task's open span: the backoff until its ``not_before``, then the wait."""
    bars: list[Bar] = []
    ready = parse_time(task.get("not_before"))
    if retry and ready is not None and ready > since:
        until = min(ready, now)
        title = _span_title(
            f"backoff, retry at {utc_text(ready)}", since, None if ready > now else ready, now
        )
        bars.append(_bar("backoff", "backoff", scale, since, until, title))
        since = until
    reason = task.get("waiting")
    what = "waiting" + (f": {reason}" if reason else "")
    after = task.get("after") or ()
    if after:
        what += f" (after {', '.join(str(name) for name in after)})"
    if since < now:
        bar = _bar("wait", "wait", scale, since, now, _span_title(what, since, None, now))
        if reason or after:
            bar.note = what
        bars.append(bar)
    return bars


def _resource(task: Mapping[str, Any]) -> tuple[str, str]:
    return str(task.get("resource_type") or ""), str(task.get("resource_id") or "")


def _links(rows: list[Row]) -> list[Row]:
    """Each task's ``after`` drawn from the end of the named task of its resource to its start."""
    by_name: dict[tuple[tuple[str, str], str], Row] = {}
    for row in rows:
        by_name[(_resource(row.task), str(row.task.get("name")))] = row
    linked = []
    for row in rows:
        links = []
        start = next((b.x for b in row.bars if b.kind == "attempt"), None)
        if start is None:
            start = row.bars[-1].x + row.bars[-1].width if row.bars else BARS_LEFT
        for name in row.task.get("after") or ():
            before = by_name.get((_resource(row.task), str(name)))
            if before is None or not before.bars:
                continue
            end = before.bars[-1].x + before.bars[-1].width
            y1, y2 = before.y + BAR_HEIGHT / 2, row.y + BAR_HEIGHT / 2
            links.append(
                Link(path=f"M{end:.1f} {y1:.1f}V{y2:.1f}H{start:.1f}", title=f"after {name}")
            )
        linked.append(Row(task=row.task, y=row.y, bars=row.bars, links=links) if links else row)
    return linked


def timeline(
    tasks: Sequence[Mapping[str, Any]],
    *,
    since: datetime | None,
    now: datetime,
    until: datetime | None = None,
    grouped: bool = False,
) -> Timeline:
    """The geometry of ``tasks`` (their views) on one time axis.

    :param since: where the axis starts (the operation's creation); the
        tasks' own times widen it.
    :param now: the time of the drawing: running bars and waits end there.
    :param until: where the axis ends when nothing is active (the operation's
        end); default: the last time any task shows, or ``now`` while one is active.
    :param grouped: a header row per resource (a bulk operation's), in the
        order the resources first appear.
    """
    moments = [m for task in tasks for m in _moments(task)]
    start = min([*moments, *([since] if since else [])], default=now)
    active = any(task.get("state") in _ACTIVE for task in tasks)
    end = max([*moments, *([until] if until else []), *([now] if active or not moments else [])])
    if (end - start).total_seconds() < 1:
        end = start + timedelta(seconds=1)
    scale = _Scale(start, end)
    y = float(AXIS_HEIGHT)
    groups: list[Group] = []
    rows: list[Row] = []
    order: list[tuple[tuple[str, str] | None, list[Mapping[str, Any]]]] = (
        [*_by_resource(tasks).items()] if grouped else [(None, list(tasks))]
    )
    for resource, members in order:
        if resource is not None:
            groups.append(Group(resource_type=resource[0], resource_id=resource[1], y=y))
            y += ROW_HEIGHT
        for task in members:
            rows.append(Row(task=task, y=y, bars=_row_bars(task, scale, now)))
            y += ROW_HEIGHT
    now_x = scale.x(now) if active else None
    return Timeline(
        height=y + 6,
        ticks=_ticks(scale),
        groups=groups,
        rows=_links(rows),
        now_x=now_x,
        start=start,
        end=end,
    )


def _by_resource(
    tasks: Sequence[Mapping[str, Any]],
) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for task in tasks:
        groups.setdefault(_resource(task), []).append(task)
    return groups
