"""The observability extras cost nothing unless used: ``import tasktoolkit`` and the
toolkit's normal use import neither ``prometheus_client`` nor ``opentelemetry``, and
work as well without them installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: A host's normal use, from a fresh interpreter; prints what it imported of the extras.
NORMAL_USE = """
    import sys
    {prelude}
    import tasktoolkit, tasktoolkit.commands, tasktoolkit.endpoints, tasktoolkit.middleware
    from sqlalchemy.orm import Session
    from tasktoolkit import Settings, Toolkit, orm
    from tasktoolkit.hooks import Hook
    from tests.models import Cluster

    toolkit = Toolkit("sqlite://", Settings(hooks=[Hook()]))
    orm.create_all(toolkit.engine)
    app = toolkit.wsgi(lambda environ, start_response: [])
    with Session(toolkit.engine) as session:
        cluster = Cluster(name="c", project_id="p")
        session.add(cluster)
        session.flush()
        cluster.spawn_tasks(["boot"])
        session.commit()
    worker = toolkit.worker(["boot"])
    while (job := worker.claim()) is not None:
        with job:
            pass
    toolkit.reap()
    toolkit.purge()
    extras = {{"prometheus_client", "opentelemetry"}}
    print(sorted({{m.split(".")[0] for m in sys.modules}} & extras))
"""

#: Makes the extras look not installed.
NOT_INSTALLED = """
    import importlib.abc
    import sys
    class Missing(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("prometheus_client", "opentelemetry"):
                raise ImportError(f"No module named {name!r}")
            return None
    sys.meta_path.insert(0, Missing())
"""


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "prelude",
    [pytest.param("", id="installed"), pytest.param(NOT_INSTALLED, id="not-installed")],
)
def test_normal_use_imports_no_extra(prelude: str) -> None:
    done = _python(NORMAL_USE.format(prelude=textwrap.indent(textwrap.dedent(prelude), "    ")))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("module", "extra"),
    [
        pytest.param("tasktoolkit.metrics", "metrics", id="metrics"),
        pytest.param("tasktoolkit.tracing", "otel", id="tracing"),
    ],
)
def test_a_missing_extra_is_named(module: str, extra: str) -> None:
    done = _python(f"{textwrap.dedent(NOT_INSTALLED)}\nimport {module}")
    assert done.returncode != 0
    assert f"pip install 'tasktoolkit[{extra}]'" in done.stderr
