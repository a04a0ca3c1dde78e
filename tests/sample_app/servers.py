"""The sample served by real servers: gunicorn on a paste pipeline, as the
production-style runs start it, and a client polling a port's status."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from tests.sample_app.conftest import Http, ServerProcess, start_process, wait_for

LISTENING = re.compile(r"Listening at: (http://127\.0\.0\.1:\d+)")


def start_gunicorn(
    ini: Path, tmp_path: Path, log: Path, *options: str, db_url: str | URL | None = None
) -> ServerProcess:
    """gunicorn serving ``ini``'s pipeline on a free port of 127.0.0.1, its control
    socket in ``tmp_path``, with ``options`` (its workers, ...); its stderr to ``log``.

    :param db_url: the sample's database (``SAMPLE_APP_DB_URL``).
    """
    return start_process(
        [
            str(Path(sys.executable).with_name("gunicorn")),
            "--paste",
            str(ini),
            "--bind",
            "127.0.0.1:0",
            "--control-socket",
            str(tmp_path / "gunicorn.ctl"),
            *options,
        ],
        log,
        env=sample_env(db_url),
    )


def sample_env(db_url: str | URL | None) -> dict[str, str]:
    """The environment naming the sample's database for a server process."""
    if db_url is None:
        return {}
    url = db_url if isinstance(db_url, str) else db_url.render_as_string(hide_password=False)
    return {"SAMPLE_APP_DB_URL": url}


def gunicorn_url(server: ServerProcess) -> str:
    """The URL gunicorn said it listens at, ``""`` until it says so."""
    found = LISTENING.search(server.stderr())
    return found.group(1) if found else ""


def port_status(client: Http, port_id: str, status: str) -> dict[str, Any]:
    """Poll ``GET /ports/<id>`` until the port has ``status``."""
    reply = wait_for(
        lambda: client.get(f"/ports/{port_id}"),
        lambda r: r.status == 200 and r.body["port"]["status"] == status,
        f"port {port_id} {status}",
    )
    return dict(reply.body["port"])
