"""oslo.config: the toolkit's options in ``[tasktoolkit]``, the database from ``[database]``."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from oslo_config import cfg

from tasktoolkit.errors import ConfigurationError, InvalidDurationError
from tasktoolkit.oslo import settings_from_config, toolkit_from_config
from tasktoolkit.settings import OPTIONS


def parsed(tmp_path: Path, text: str) -> cfg.ConfigOpts:
    path = tmp_path / "service.conf"
    path.write_text(text)
    conf = cfg.ConfigOpts()
    if "[database]" in text:
        conf.register_opts([cfg.StrOpt("connection")], group="database")
    conf(["--config-file", str(path)], project="service")
    return conf


def test_the_generator_prints_every_option() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "oslo_config.generator", "--namespace", "tasktoolkit"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "[tasktoolkit]" in printed
    for option in OPTIONS:
        assert f"#{option.name} =" in printed
    assert "#deadline = 5s" in printed and "#request_timeout = 10m" in printed


def test_settings_from_the_file(tmp_path: Path) -> None:
    conf = parsed(
        tmp_path,
        "[tasktoolkit]\ndeadline = 2500ms\nrequest_timeout = 1h\n"
        "request_id_header = X-OpenStack-Request-ID\nmethods = POST, DELETE\n",
    )
    settings = settings_from_config(conf, durable=True)
    assert settings.deadline == timedelta(seconds=2.5)
    assert settings.request_timeout == timedelta(hours=1)
    assert settings.request_id_header == "X-OpenStack-Request-ID"
    assert settings.methods == ("POST", "DELETE")
    assert settings.durable is True


def test_a_bad_value_in_the_file_names_its_group_and_option(tmp_path: Path) -> None:
    conf = parsed(tmp_path, "[tasktoolkit]\ndeadline = soon\n")
    with pytest.raises(InvalidDurationError, match=r"\[tasktoolkit\] deadline: 'soon'"):
        settings_from_config(conf)


def test_the_database_is_the_services_connection(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'service.db'}"
    conf = parsed(tmp_path, f"[database]\nconnection = {url}\n[tasktoolkit]\ndeadline = 1s\n")
    toolkit = toolkit_from_config(conf)
    assert str(toolkit.engine.url) == url
    assert toolkit.settings.deadline == timedelta(seconds=1)
    toolkit.engine.dispose()


def test_no_database_is_a_configuration_error(tmp_path: Path) -> None:
    conf = parsed(tmp_path, "[tasktoolkit]\n")
    with pytest.raises(ConfigurationError, match=r"\[database\] connection"):
        toolkit_from_config(conf)
