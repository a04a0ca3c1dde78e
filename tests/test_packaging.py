"""Packaging: the wheel holds only the library, its metadata, one version, the CLI's --version;
the sdist holds the whole source and its tests run; the suite passes on the declared minimums;
the test command's groups exist, and a run without database servers stays readable."""

from __future__ import annotations

import email.parser
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import tasktoolkit

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel ``pip wheel .`` builds from the repository, and what the build printed."""
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-w", str(out), "-v"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (built,) = out.glob("tasktoolkit-*.whl")
    return built, result.stdout + result.stderr


def test_the_wheel_installs_only_the_library(wheel: tuple[Path, str]) -> None:
    info = f"tasktoolkit-{tasktoolkit.__version__}.dist-info"
    with zipfile.ZipFile(wheel[0]) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        entry_points = archive.read(f"{info}/entry_points.txt")
    assert tops == {"tasktoolkit", info}
    assert b"sample_app" not in entry_points


def test_the_wheel_holds_the_pages_templates_and_assets(wheel: tuple[Path, str]) -> None:
    with zipfile.ZipFile(wheel[0]) as archive:
        names = set(archive.namelist())
    package = ROOT / "tasktoolkit" / "pages"
    for folder in ("templates", "static"):
        for path in (package / folder).iterdir():
            assert f"tasktoolkit/pages/{folder}/{path.name}" in names


def test_the_wheel_metadata(wheel: tuple[Path, str]) -> None:
    with zipfile.ZipFile(wheel[0]) as archive:
        info = f"tasktoolkit-{tasktoolkit.__version__}.dist-info"
        metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
        license_text = archive.read(f"{info}/licenses/LICENSE").decode()
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["License"] is None  # the deprecated free-text field
    assert "Apache License" in license_text and "Version 2.0" in license_text
    assert metadata["Version"] == tasktoolkit.__version__
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL", []))
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= urls.keys()
    classifiers = metadata.get_all("Classifier", [])
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert "Programming Language :: Python :: 3 :: Only" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]


def test_the_build_prints_no_deprecation(wheel: tuple[Path, str]) -> None:
    found = [line for line in wheel[1].splitlines() if re.search(r"(?i)deprecat", line)]
    assert not found, "\n".join(found)


def test_one_version_everywhere() -> None:
    assert version("tasktoolkit") == tasktoolkit.__version__
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]  # tasktoolkit.__version__
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{tasktoolkit.__version__}] - " in changelog
    assert changelog.startswith("# Changelog\n")
    assert "## [Unreleased]" in changelog


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([str(Path(sys.executable).with_name("tasktoolkit"))], id="script"),
        pytest.param([sys.executable, "-m", "tasktoolkit"], id="python-m"),
    ],
)
def test_version_option(command: list[str]) -> None:
    result = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"tasktoolkit {tasktoolkit.__version__}\n"


def test_python_m_tasktoolkit_runs_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tasktoolkit", "purge", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: tasktoolkit purge")


def test_the_optional_bridges_are_imported_only_when_used() -> None:
    """Using the library (and its command) imports neither Celery nor oslo."""
    code = (
        "import sys, tasktoolkit.orm, tasktoolkit.middleware, tasktoolkit.endpoints, "
        "tasktoolkit.commands; print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('celery', 'kombu', 'oslo_context', 'oslo_log', 'oslo_policy')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_celery_extra_is_declared(wheel: tuple[Path, str]) -> None:
    with zipfile.ZipFile(wheel[0]) as archive:
        info = f"tasktoolkit-{tasktoolkit.__version__}.dist-info"
        metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
    assert "celery" in metadata.get_all("Provides-Extra", [])
    assert any(
        "celery[redis]" in r and 'extra == "celery"' in r
        for r in metadata.get_all("Requires-Dist", [])
    )


def test_test_and_bench_are_dependency_groups_not_extras(wheel: tuple[Path, str]) -> None:
    with zipfile.ZipFile(wheel[0]) as archive:
        info = f"tasktoolkit-{tasktoolkit.__version__}.dist-info"
        metadata = email.parser.Parser().parsestr(archive.read(f"{info}/METADATA").decode())
    published = set(metadata.get_all("Provides-Extra", []))
    assert published == {"postgresql", "mysql", "oslo", "celery", "metrics", "otel", "pages"}
    assert {"test", "bench"} <= PYPROJECT["dependency-groups"].keys()


def _readme_command(marker: str) -> str:
    lines = (ROOT / "README.md").read_text().splitlines()
    return lines[lines.index(f"<!-- {marker} -->") + 2]


def test_the_test_command_installs_what_pyproject_declares() -> None:
    """The README's test command (run as is by CI) upgrades pip before ``--group`` (pip 25.1),
    and names only groups and extras that exist."""
    steps = [shlex.split(step) for step in _readme_command("test-command").split(" && ")]
    installs = [s for s in steps if s[:4] == ["python", "-m", "pip", "install"]]
    assert installs[0] == ["python", "-m", "pip", "install", "-U", "pip"]
    groups = {s[i + 1] for s in installs for i, word in enumerate(s) if word == "--group"}
    assert groups == {"test"} and groups <= PYPROJECT["dependency-groups"].keys()
    extras = {
        extra
        for s in installs
        for word in s
        if (found := re.fullmatch(r"\.\[(.*)\]", word))
        for extra in found.group(1).split(",")
    }
    assert extras == PYPROJECT["project"]["optional-dependencies"].keys()


# -- the sdist ----------------------------------------------------------------------

#: What the sdist carries besides the library: the tests with every helper, the docs, the
#: changelog, the sample and the benchmarks.
SDIST_TREES = ("tasktoolkit", "tests", "docs", "sample_app", "benchmarks")
SDIST_FILES = ("README.md", "CHANGELOG.md", "LICENSE", "pyproject.toml", "setup.cfg", "MANIFEST.in")
#: Left in the trees by runs (MANIFEST.in's global-exclude), never sources.
RUN_LEFTOVERS = re.compile(r"(^|/)__pycache__/|\.(py[cod]|db|db-journal|db-wal|db-shm|tmp)$")


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist ``python -m build --sdist`` makes of a copy of the repository without what
    builds and runs leave (an old ``*.egg-info/SOURCES.txt`` would add the files it lists)."""
    out = tmp_path_factory.mktemp("sdist")
    source = tmp_path_factory.mktemp("source") / "tasktoolkit"
    left = (".*", "*.egg-info", "build", "dist", "__pycache__", "*.py[cod]", "*.db*", "*.tmp")
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*left))
    result = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(out), str(source)],
        cwd=out,  # not the source, whose build/ would shadow the build package
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (built,) = out.glob("tasktoolkit-*.tar.gz")
    return built


def _sources() -> set[str]:
    found = set(SDIST_FILES)
    for tree in SDIST_TREES:
        for path in (ROOT / tree).rglob("*"):
            name = path.relative_to(ROOT).as_posix()
            if path.is_file() and not RUN_LEFTOVERS.search(name):
                found.add(name)
    return found


def test_the_sdist_holds_the_whole_source(sdist: Path) -> None:
    top = f"tasktoolkit-{tasktoolkit.__version__}/"
    with tarfile.open(sdist) as archive:
        names = {m.name.removeprefix(top) for m in archive.getmembers() if m.isfile()}
    sources = _sources()
    assert sources - names == set(), "missing from the sdist"
    generated = {n for n in names - sources if not n.startswith("tasktoolkit.egg-info/")}
    assert generated == {"PKG-INFO"}


def test_the_sdists_tests_run(sdist: Path, tmp_path: Path) -> None:
    """The unpacked sdist runs its own tests (helpers, conftest, models) on SQLite."""
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    (unpacked,) = tmp_path.iterdir()
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"),
            *("tests/orm/test_transitions.py", "tests/middleware/test_operations.py"),
            *("-k", "not postgresql and not mariadb"),
        ],
        cwd=unpacked,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"\b\d+ passed\b", result.stdout)


# -- the declared minimums ---------------------------------------------------------

#: Part of the suite run on the lowest versions pyproject.toml allows, on each database
#: (PyMySQL, psycopg), chosen for what an older release broke: the middleware's writes and
#: keyed requests (SQLAlchemy: a ROLLBACK per request on MariaDB before 2.0.43, failing keyed
#: requests on PostgreSQL in 2.0.20; WebOb), signals (blinker), the endpoints (Routes), the
#: one LISTEN connection (psycopg before 3.2 has no ``notifies(timeout=...)``) and migrations
#: (alembic 1.11.0 fails them).
ON_THE_MINIMUMS = (
    "tests/middleware/test_operations.py",
    "tests/middleware/test_idempotency.py",
    "tests/orm/test_signals.py",
    "tests/endpoints/test_endpoints.py",
    "tests/orm/test_queues.py::test_an_idle_worker_sends_no_statement_while_woken_by_postgresql",
    "tests/orm/test_migrations.py::test_host_migrations_match_the_models[sqlite]",
    "tests/orm/test_migrations.py::test_upgrade_is_idempotent_and_steps_relatively[sqlite]",
)


def declared_minimums() -> list[str]:
    """``name[extras]==lowest`` for each runtime dependency and database driver on this Python."""
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    pins = []
    for line in [*project["dependencies"], *extras["postgresql"], *extras["mysql"]]:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        (lowest,) = [s.version for s in requirement.specifier if s.operator == ">="]
        extra = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        pins.append(f"{requirement.name}{extra}=={lowest}")
    return pins


def test_every_runtime_dependency_has_a_lower_bound() -> None:
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"].values()
    for line in [*project["dependencies"], *(line for extra in extras for line in extra)]:
        assert [s for s in Requirement(line).specifier if s.operator == ">="], line


def test_the_suite_passes_on_the_declared_minimums(tmp_path: Path) -> None:
    """A fresh environment with each dependency at its lower bound runs part of the suite."""
    env_dir = tmp_path / "minimums"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    pins = declared_minimums()
    # The tools those tests import, at this environment's versions.
    tools = [f"{name}=={version(name)}" for name in ("pytest", "WebTest")]
    installed = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins, *tools],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    environ = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    result = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *ON_THE_MINIMUMS],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]


# -- a run without database servers -------------------------------------------------


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port that refuses connections (bound, never listening) while the test runs."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def test_a_run_without_database_servers_sums_its_skips_by_reason(closed_port: int) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "CI"}  # CI fails such skips
    environ["TASKTOOLKIT_TEST_POSTGRESQL_URL"] = (
        f"postgresql+psycopg://postgres@127.0.0.1:{closed_port}/test"
    )
    environ["TASKTOOLKIT_TEST_MARIADB_URL"] = f"mysql+pymysql://root@127.0.0.1:{closed_port}/test"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests/orm/test_results.py"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    lines = result.stdout.splitlines()
    assert not [line for line in lines if line.startswith("SKIPPED")]
    summed = {
        found.group(2): int(found.group(1))
        for line in lines
        if (found := re.fullmatch(r" *(\d+) (postgresql|mariadb) is unreachable at .*", line))
    }
    passed = int(re.search(r"(\d+) passed", lines[-1]).group(1))  # type: ignore[union-attr]
    assert summed == {"postgresql": passed, "mariadb": passed}  # one per test on SQLite
