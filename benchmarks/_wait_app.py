"""The app the ``wait`` benchmark serves under gunicorn: the endpoints, counting statements.

The database is ``TASKTOOLKIT_BENCH_DB_URL``; ``GET /_statements`` answers how
many statements the app has sent to it so far.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from typing import Any

import routes
from sqlalchemy import create_engine, event
from sqlalchemy.orm import sessionmaker

from sample_app.models import Network, Port
from tasktoolkit import Settings
from tasktoolkit.endpoints import Router, mount
from tasktoolkit.orm import prepare_engine

_engine = prepare_engine(create_engine(os.environ["TASKTOOLKIT_BENCH_DB_URL"], pool_size=20))
_counter = itertools.count()
_sent = [0]


@event.listens_for(_engine, "before_cursor_execute")
def _count(*_: Any) -> None:
    _sent[0] = next(_counter) + 1


_mapper = routes.Mapper()
mount(
    _mapper,
    collections={"ports": Port, "networks": Network},
    session_factory=sessionmaker(_engine),
    # Its 200 waits on 256 threads: the benchmark measures what waiting costs.
    settings=Settings(max_wait=120, max_waiting=200),
)
_router = Router(_mapper)


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/_statements":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(_sent[0]).encode()]
    return _router(environ, start_response)  # type: ignore[no-any-return]
