"""Running calls at the same moment in threads of their own."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar, cast

T = TypeVar("T")


def at_once(*calls: Callable[[], T], timeout: float = 120) -> list[T]:
    """Run each call in a thread of its own, all released together; their results in order.

    Fails the test if a call raised or had not returned ``timeout`` seconds after the start.
    """
    barrier = threading.Barrier(len(calls))
    results: list[T | None] = [None] * len(calls)
    failures: list[BaseException] = []

    def run(index: int, call: Callable[[], T]) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = call()
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=pair) for pair in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), "a call did not return in time"
    assert not failures, failures
    return cast(list[T], results)
