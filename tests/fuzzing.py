"""Hypothesis settings of the tests that fuzz an API from its OpenAPI document."""

from __future__ import annotations

from hypothesis import HealthCheck, settings


def replayable(max_examples: int) -> settings:
    """``max_examples`` examples, the same on every run (none kept between runs),
    without a time limit per example or a health check refusing slow or filtered data."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
