"""A database worker process for the tracing tests: ``python -m tests.tracing.worker_process``.

Runs every pending task named in ``TRACING_TEST_NAMES`` (comma separated) on
``TRACING_TEST_DB_URL``, then exits; ``broken`` fails, ``flaky`` fails
retryably once. Its tracer is whatever the process was started with
(``opentelemetry-instrument`` and the ``OTEL_*`` variables).
"""

from __future__ import annotations

import os

from tasktoolkit import Settings, Toolkit
from tasktoolkit.errors import TaskFailure
from tasktoolkit.tracing import Tracing
from tests import models  # noqa: F401  (the test resource types, for the tasks table)


def main() -> None:
    toolkit = Toolkit(os.environ["TRACING_TEST_DB_URL"], Settings(hooks=[Tracing()]))
    worker = toolkit.worker(os.environ["TRACING_TEST_NAMES"].split(","))
    while (job := worker.claim()) is not None:
        with job:
            if job.name == "broken":
                raise TaskFailure("wiring_failed", "no port")
            if job.name == "flaky" and job.attempts == 1:
                raise TaskFailure("agent_busy", "try again", retryable=True)
    toolkit.engine.dispose()


if __name__ == "__main__":
    main()
