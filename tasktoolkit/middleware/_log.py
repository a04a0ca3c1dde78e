"""A logging filter that puts the request ids on every record made during a request.

Add it to a *handler* (not a logger), so records of every logger that reach
the handler get the ids::

    handler = logging.StreamHandler()
    handler.addFilter(RequestIdLogFilter())
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s [%(request_id)s %(global_request_id)s] %(name)s: %(message)s"
    ))
    logging.getLogger().addHandler(handler)

Outside a request the fields are ``-`` (``placeholder``).
"""

from __future__ import annotations

import logging

from tasktoolkit.context import current

__all__ = ["RequestIdLogFilter"]


class RequestIdLogFilter(logging.Filter):
    """Set ``request_id``, ``global_request_id`` and ``operation_id`` on each record.

    A value the record already has (passed with ``extra=``) is kept. Never
    drops a record.

    :param placeholder: the value outside a request (or with no global id).
    """

    def __init__(self, name: str = "", *, placeholder: str = "-") -> None:
        super().__init__(name)
        self.placeholder = placeholder

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = current()
        fields = record.__dict__
        empty = self.placeholder
        if ctx is None:
            fields.setdefault("request_id", empty)
            fields.setdefault("global_request_id", empty)
            fields.setdefault("operation_id", empty)
        else:
            fields.setdefault("request_id", ctx.request_id)
            fields.setdefault("global_request_id", ctx.global_request_id or empty)
            fields.setdefault("operation_id", ctx.operation_id or empty)
        return True
