"""Parametrized cases built from the test's own helpers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from _pytest.mark import ParameterSet


def named_cases(*functions: Callable[..., object], prefix: str = "_") -> list[ParameterSet]:
    """One case a function, its id the function's name less ``prefix``, with dashes.

    ``_raw_sql_delete`` is the case ``raw-sql-delete``: the id cannot drift from the code.
    """
    return [
        pytest.param(f, id=f.__name__.removeprefix(prefix).replace("_", "-")) for f in functions
    ]
