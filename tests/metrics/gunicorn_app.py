"""A WSGI app for gunicorn: each POST spawns a task and runs it; ``/metrics`` is the scrape.

Its database is ``METRICS_TEST_DB_URL``; the answer to a POST is the pid of the
worker process that ran it, so a test knows which processes served.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from tasktoolkit import Settings, Toolkit
from tasktoolkit.metrics import Metrics, metrics_app
from tests.models import Cluster

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

toolkit = Toolkit(os.environ["METRICS_TEST_DB_URL"], Settings(hooks=[Metrics()]))
scrape = metrics_app(toolkit)


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/metrics":
        return scrape(environ, start_response)
    with Session(toolkit.engine, expire_on_commit=False) as session:
        cluster = Cluster(name="c", project_id="p")
        session.add(cluster)
        session.flush()
        (task,) = cluster.spawn_tasks(["count"])
        session.commit()
    with toolkit.worker(["count"]).start(task.id):
        pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
