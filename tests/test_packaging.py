"""Packaging: the wheel holds only the library, its metadata, one version, the CLI's --version."""

from __future__ import annotations

import email.parser
import re
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

import tasktoolkit

ROOT = Path(__file__).resolve().parents[1]


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
