"""An API host in a process of its own: one request through both middlewares.

``python -m tests.orm.api_process URL``: serves one ``POST /clusters`` whose app
creates a cluster and spawns one ``build`` task (its name's default rules: a
start timeout of an hour), answers 202 and ends; prints the request id. Run
under a faked clock, it shows that what an API host writes keeps the
database's time.
"""

from __future__ import annotations

import io
import sys
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from tasktoolkit.middleware import OPERATION_ID_KEY, OperationMiddleware, RequestIdMiddleware
from tasktoolkit.orm import prepare_engine
from tests.models import Cluster


def main(url: str) -> None:
    engine = prepare_engine(create_engine(url))
    sessions = sessionmaker(engine, expire_on_commit=False)
    seen: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with sessions() as session:
            cluster = Cluster(name="faked", project_id="p1")
            session.add(cluster)
            session.flush()
            cluster.spawn_tasks(["build"])
            session.commit()
        seen.append(environ[OPERATION_ID_KEY])
        start_response("202 Accepted", [("Content-Type", "text/plain")])
        return [b"accepted"]

    operations = OperationMiddleware(app, engine=engine)
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/clusters",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "HTTP_X_PROJECT_ID": "p1",
    }
    body = RequestIdMiddleware(operations)(environ, lambda status, headers, exc_info=None: None)
    list(body)
    body.close()  # type: ignore[attr-defined]
    operations.close()  # its end is written before the process goes
    engine.dispose()
    print(seen[0], flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
