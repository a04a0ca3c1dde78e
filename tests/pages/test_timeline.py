"""The timeline's geometry from task views: a bar per attempt, waits, backoffs, texts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from tasktoolkit.pages._timeline import BARS_LEFT, BARS_RIGHT, WIDTH, timeline
from tests.pages.views import T0, at, attempt, task

FAILED = {"code": "agent_busy", "message": "the agent is busy"}

SHAPES = [
    pytest.param(
        task("a", "succeeded", attempt(1, 2, 5, "succeeded")),
        ["wait", "attempt"],
        id="succeeded-after-a-wait",
    ),
    pytest.param(
        task(
            "a",
            "succeeded",
            attempt(1, 1, 2, "failed", error=FAILED),
            attempt(2, 4, 6, "succeeded"),
        ),
        ["wait", "attempt", "backoff", "attempt"],
        id="retried-two-attempts",
    ),
    pytest.param(
        task("a", "running", attempt(1, 0, None, None), progress=40, message="half"),
        ["attempt"],
        id="running-at-once",
    ),
    pytest.param(task("a", "pending"), ["wait"], id="pending"),
    pytest.param(
        task(
            "a",
            "pending",
            attempt(1, 1, 2, "failed", error=FAILED),
            not_before=at(5),
        ),
        ["wait", "attempt", "backoff", "wait"],
        id="pending-in-backoff-then-waiting",
    ),
    pytest.param(
        task("a", "failed", error={"code": "not_started", "message": "never"}),
        ["wait"],
        id="failed-before-starting",
    ),
]


@pytest.mark.parametrize(("view", "kinds"), SHAPES)
def test_each_attempt_is_a_bar_between_waits_and_backoffs(view: Any, kinds: list[str]) -> None:
    line = timeline([view], since=T0, now=T0 + timedelta(seconds=10))
    [row] = line.rows
    assert [bar.kind for bar in row.bars] == kinds
    assert [b.number for b in row.bars if b.kind == "attempt"] == [
        a["number"] for a in view["attempts"]
    ]
    for bar in row.bars:
        assert BARS_LEFT <= bar.x and bar.x + bar.width <= BARS_RIGHT + 1.5
    starts = [bar.x for bar in row.bars]
    assert starts == sorted(starts)


def test_bars_span_their_times_on_one_scale() -> None:
    view = task("a", "succeeded", attempt(1, 2, 6, "succeeded"))
    line = timeline(
        [view], since=T0, now=T0 + timedelta(seconds=60), until=T0 + timedelta(seconds=10)
    )
    wait, bar = line.rows[0].bars
    per_second = (BARS_RIGHT - BARS_LEFT) / 10
    assert wait.x == BARS_LEFT and wait.width == pytest.approx(2 * per_second, abs=0.2)
    assert bar.x == pytest.approx(BARS_LEFT + 2 * per_second, abs=0.2)
    assert bar.width == pytest.approx(4 * per_second, abs=0.2)
    assert bar.outcome == "succeeded"
    assert line.now_x is None  # nothing active: no "now" line, the axis ends at the end


def test_a_running_bar_shows_its_progress_and_message() -> None:
    view = task("a", "running", attempt(1, 0, None, None), progress=40, message="wiring")
    [bar] = timeline([view], since=T0, now=T0 + timedelta(seconds=10)).rows[0].bars
    assert bar.outcome == "running"
    assert bar.progress == pytest.approx(bar.width * 0.4, abs=0.2)
    assert bar.text == "40% wiring"


def test_a_failed_attempt_says_its_error_and_a_retried_row_says_it_failed_once() -> None:
    failed = task("a", "failed", attempt(1, 1, 9, "failed", error=FAILED))
    retried = task(
        "b", "succeeded", attempt(1, 1, 2, "failed", error=FAILED), attempt(2, 3, 4, "succeeded")
    )
    line = timeline([failed, retried], since=T0, now=T0 + timedelta(seconds=10))
    assert line.rows[0].bars[-1].text == "agent_busy: the agent is busy"
    assert line.rows[1].bars[-1].text.startswith("after 1 failed attempt (agent_busy")
    for row in line.rows:
        for bar in row.bars:
            if bar.text:
                assert bar.text_x + len(bar.text) * 6.2 <= WIDTH + 1


def test_a_long_text_is_cut_to_fit() -> None:
    view = task("a", "running", attempt(1, 0, None, None), progress=5, message="x" * 500)
    [bar] = timeline([view], since=T0, now=T0 + timedelta(seconds=10)).rows[0].bars
    assert bar.text.endswith("\u2026") and len(bar.text) < 200


def test_a_bulk_operation_is_grouped_by_resource_in_order_of_appearance() -> None:
    views = [
        task("a", "succeeded", resource="r2"),
        task("b", "succeeded", resource="r1"),
        task("c", "succeeded", resource="r2"),
    ]
    line = timeline(views, since=T0, now=T0 + timedelta(seconds=5), grouped=True)
    assert [g.resource_id for g in line.groups] == ["r2", "r1"]
    assert [r.task["name"] for r in line.rows] == ["a", "c", "b"]
    ys = sorted([g.y for g in line.groups] + [r.y for r in line.rows])
    assert len(set(ys)) == len(ys)  # no two rows drawn on one line


def test_waits_on_other_tasks_are_drawn_when_the_views_have_them() -> None:
    first = task("l2_wiring", "running", attempt(1, 1, None, None))
    second = task("dhcp", "pending", after=["l2_wiring"], waiting="after")
    line = timeline([first, second], since=T0, now=T0 + timedelta(seconds=5))
    [link] = line.rows[1].links
    assert link.title == "after l2_wiring"
    assert line.rows[1].bars[-1].text.startswith("waiting: after (after l2_wiring)")
    assert timeline([task("x", "pending")], since=T0, now=T0).rows[0].links == []


def test_ticks_are_within_the_axis_and_increase() -> None:
    for seconds in (0.4, 3, 75, 4000, 200000):
        view = task("a", "succeeded", attempt(1, 0, seconds, "succeeded"))
        line = timeline([view], since=T0, now=T0 + timedelta(seconds=seconds))
        xs = [tick.x for tick in line.ticks]
        assert 2 <= len(xs) <= 9, (seconds, xs)
        assert xs == sorted(xs) and BARS_LEFT <= xs[0] and xs[-1] <= BARS_RIGHT
        assert all(tick.title.endswith(" UTC") for tick in line.ticks)
