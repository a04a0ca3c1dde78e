"""The whole stack as a host makes it, ``Toolkit(engine, Settings(...)).wsgi(app)``, for tests."""

from __future__ import annotations

from typing import Any

import webtest
from sqlalchemy.engine import Engine

from tasktoolkit import Settings, Toolkit
from tasktoolkit.middleware import OperationMiddleware, RequestIdMiddleware


def operations_of(stack: Any) -> OperationMiddleware:
    """The operation middleware of a stack made by :meth:`Toolkit.wsgi`."""
    assert isinstance(stack, RequestIdMiddleware)
    operations = stack.app
    assert isinstance(operations, OperationMiddleware)
    return operations


class FlushingTestApp(webtest.TestApp):
    """A TestApp that waits, after each request, until the end writer has written its end."""

    def __init__(self, app: Any, **options: Any) -> None:
        super().__init__(app, **options)
        self.operations = operations_of(app)

    def do_request(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().do_request(*args, **kwargs)
        finally:
            self.operations.flush_ends()


class Stacks:
    """Makes stacks on one engine and closes them (their writers flushed) at the end."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.toolkits: list[Toolkit] = []
        self.made: list[OperationMiddleware] = []

    def wsgi(self, app: Any, *, engine: Engine | None = None, **options: Any) -> Any:
        """``app`` behind both middlewares, on ``Settings(**options)``."""
        toolkit = Toolkit(engine or self.engine, Settings(**options))
        self.toolkits.append(toolkit)
        stack = toolkit.wsgi(app)
        self.made.append(operations_of(stack))
        return stack

    def test_app(self, app: Any, **options: Any) -> FlushingTestApp:
        """A lint-checking :class:`FlushingTestApp` of ``wsgi(app, **options)``."""
        return FlushingTestApp(self.wsgi(app, **options), lint=True)

    def close(self) -> None:
        for operations in self.made:
            operations.close()
        for toolkit in self.toolkits:
            toolkit.close()
