"""gunicorn serving a paste pipeline, as the sample's production-style runs start it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tests.sample_app.conftest import ServerProcess, start_process

LISTENING = re.compile(r"Listening at: (http://127\.0\.0\.1:\d+)")


def start_gunicorn(ini: Path, tmp_path: Path, log: Path, *options: str) -> ServerProcess:
    """gunicorn serving ``ini``'s pipeline on a free port of 127.0.0.1, its control
    socket in ``tmp_path``, with ``options`` (its workers, ...); its stderr to ``log``."""
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
    )


def gunicorn_url(server: ServerProcess) -> str:
    """The URL gunicorn said it listens at, ``""`` until it says so."""
    found = LISTENING.search(server.stderr())
    return found.group(1) if found else ""
