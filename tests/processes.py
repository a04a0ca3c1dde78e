"""Python processes a test starts, each logging to a file of its own; all killed at its end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class Processes:
    """``python -m MODULE ARG...`` in the repository, its standard error (and output,
    unless piped) in ``tmp_path``; :meth:`close` kills those still running."""

    def __init__(self, tmp_path: Path, name: str) -> None:
        self.tmp_path = tmp_path
        self.name = name
        self.started: list[subprocess.Popen[str]] = []

    def start(
        self, module: str, *args: str, env: dict[str, str] | None = None, piped: bool = False
    ) -> subprocess.Popen[str]:
        """Start one; with ``piped``, its standard output is the process's ``stdout``."""
        log = (self.tmp_path / f"{self.name}-{len(self.started)}.log").open("w")
        out: Any = subprocess.PIPE if piped else log
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            stdout=out,
            stderr=log if piped else subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        log.close()
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.communicate()
