"""Over HTTP, the commands authenticate as OpenStack's command line does: keystoneauth's
``OS_*`` variables and ``clouds.yaml`` (here against a small stand-in for keystone's v3
API: a token with a catalog), a token alone, or (without keystoneauth) a plain token."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit import commands
from tests.commands.conftest import AS_ADMIN, Counted, run, spawn
from tests.middleware.test_concurrency import Served

#: Every variable keystoneauth or the commands read; each test sets its own.
OS_ENV = (
    "OS_CLOUD",
    "OS_CLIENT_CONFIG_FILE",
    "OS_AUTH_URL",
    "OS_AUTH_TYPE",
    "OS_TOKEN",
    "OS_USERNAME",
    "OS_PASSWORD",
    "OS_PROJECT_NAME",
    "OS_USER_DOMAIN_NAME",
    "OS_PROJECT_DOMAIN_NAME",
    "OS_INTERFACE",
    "OS_REGION_NAME",
    "TASKTOOLKIT_URL",
    "TASKTOOLKIT_DB_URL",
)
SERVICE_TYPE = "task-records"


class Keystone:
    """Keystone's v3 password authentication, as keystoneauth asks it: version discovery,
    then ``POST /v3/auth/tokens`` answered with a token and a catalog naming ``endpoint``
    (of type :data:`SERVICE_TYPE`). Wrong passwords get a 401."""

    def __init__(self, endpoint: str, password: str) -> None:
        self.endpoint, self.password = endpoint, password
        self.issued: list[str] = []
        self.numbers = count(1)
        self.base = ""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path, method = environ["PATH_INFO"].rstrip("/"), environ["REQUEST_METHOD"]
        headers: list[tuple[str, str]] = [("Content-Type", "application/json")]
        if method == "GET" and path in ("", "/v3"):
            version = {
                "id": "v3.14",
                "status": "stable",
                "updated": "2020-04-07T00:00:00Z",
                "links": [{"rel": "self", "href": f"{self.base}/v3/"}],
                "media-types": [],
            }
            body: Any = {"version": version} if path else {"versions": {"values": [version]}}
            status = "200 OK"
        elif method == "POST" and path == "/v3/auth/tokens":
            sent = json.loads(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
            password = sent["auth"]["identity"]["password"]["user"]["password"]
            if password != self.password:
                body, status = (
                    {"error": {"code": 401, "message": "bad password"}},
                    "401 Unauthorized",
                )
            else:
                token = f"token-{next(self.numbers)}"
                self.issued.append(token)
                headers.append(("X-Subject-Token", token))
                body, status = self._token(), "201 Created"
        else:
            body, status = {"error": {"code": 404, "message": "not found"}}, "404 Not Found"
        start_response(status, headers)
        return [json.dumps(body).encode()]

    def _token(self) -> dict[str, Any]:
        domain = {"id": "default", "name": "Default"}
        endpoint = {
            "id": "e1",
            "interface": "public",
            "region": "RegionOne",
            "region_id": "RegionOne",
            "url": self.endpoint,
        }
        return {
            "token": {
                "methods": ["password"],
                "expires_at": "2099-01-01T00:00:00.000000Z",
                "issued_at": "2024-01-01T00:00:00.000000Z",
                "user": {"id": "u1", "name": "operator", "domain": domain},
                "project": {"id": "p1", "name": "demo", "domain": domain},
                "roles": [{"id": "r1", "name": "admin"}],
                "catalog": [
                    {"id": "s1", "type": SERVICE_TYPE, "name": "tasks", "endpoints": [endpoint]}
                ],
            }
        }


@pytest.fixture(autouse=True)
def _os_environment_of_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OS_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def service(served: Callable[..., tuple[str, Counted]]) -> tuple[str, Counted]:
    return served()


@pytest.fixture
def keystone(service: tuple[str, Counted]) -> Iterator[tuple[str, Keystone]]:
    """The stand-in keystone, its catalog naming ``service``; its auth URL."""
    app = Keystone(service[0], password="secret")
    server = Served(app)
    app.base = f"http://{server.address[0]}:{server.address[1]}"
    yield f"{app.base}/v3", app
    server.stop()


def _password_env(monkeypatch: pytest.MonkeyPatch, auth_url: str, password: str) -> None:
    for name, value in {
        "OS_AUTH_URL": auth_url,
        "OS_USERNAME": "operator",
        "OS_PASSWORD": password,
        "OS_PROJECT_NAME": "demo",
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default",
    }.items():
        monkeypatch.setenv(name, value)


def _clouds_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, auth_url: str) -> None:
    path = tmp_path / "clouds.yaml"
    path.write_text(
        "clouds:\n"
        "  devstack:\n"
        "    region_name: RegionOne\n"
        "    auth:\n"
        f"      auth_url: {auth_url}\n"
        "      username: operator\n"
        "      password: secret\n"
        "      project_name: demo\n"
        "      user_domain_name: Default\n"
        "      project_domain_name: Default\n"
    )
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))


@pytest.mark.parametrize(
    ("how", "options"),
    [
        pytest.param("environment", ["--os-service-type", SERVICE_TYPE], id="os-env-catalog"),
        pytest.param("environment", ["--url", "{service}"], id="os-env-url"),
        pytest.param(
            "clouds.yaml",
            ["--os-cloud", "devstack", "--os-service-type", SERVICE_TYPE],
            id="os-cloud",
        ),
    ],
)
def test_keystoneauth_authenticates_and_finds_the_service(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    session_factory: sessionmaker[Session],
    service: tuple[str, Counted],
    keystone: tuple[str, Keystone],
    how: str,
    options: list[str],
) -> None:
    rid, _ = spawn(session_factory, ["build"])
    auth_url, identity = keystone
    if how == "environment":
        _password_env(monkeypatch, auth_url, "secret")
    else:
        _clouds_yaml(monkeypatch, tmp_path, auth_url)
    options = [o.format(service=service[0]) for o in options]
    argv = ["operations", "list", *options, *AS_ADMIN, "-f", "value", "-c", "id"]
    assert run(capsys, *argv) == (commands.EXIT_OK, f"{rid}\n", "")
    assert identity.issued == ["token-1"]
    assert service[1].tokens[-1] == "token-1"  # the service was sent keystone's token


def test_a_refused_password_is_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    service: tuple[str, Counted],
    keystone: tuple[str, Keystone],
) -> None:
    _password_env(monkeypatch, keystone[0], "wrong")
    status, out, err = run(capsys, "tasks", "list", "--os-service-type", SERVICE_TYPE)
    assert (status, out) == (commands.EXIT_ERROR, "")
    assert len(err.splitlines()) == 1 and "401" in err
    assert service[1].requests == 0


@pytest.mark.parametrize(
    "keystoneauth",
    [pytest.param(True, id="admin-token-plugin"), pytest.param(False, id="no-keystoneauth")],
)
def test_a_token_alone_is_sent_as_it_is(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    session_factory: sessionmaker[Session],
    service: tuple[str, Counted],
    keystoneauth: bool,
) -> None:
    if not keystoneauth:
        monkeypatch.setitem(sys.modules, "keystoneauth1", None)  # not installed
    rid, _ = spawn(session_factory, ["build"])
    argv = ["operations", "show", rid, "--url", service[0], "--os-token", "tok", *AS_ADMIN]
    assert run(capsys, *argv, "-f", "value", "-c", "id") == (0, f"{rid}\n", "")
    assert service[1].tokens == ["tok"]


@pytest.mark.parametrize(
    ("argv", "keystoneauth", "says"),
    [
        pytest.param(
            ["--os-cloud", "nowhere"],
            True,
            "no cloud 'nowhere'",
            id="unknown-cloud",
        ),
        pytest.param(
            ["--os-cloud", "devstack"],
            False,
            "--os-cloud: keystoneauth1 is not installed; pip install 'tasktoolkit[oslo]'",
            id="no-keystoneauth",
        ),
        pytest.param(
            ["--os-service-type", "x"],
            True,
            "--os-service-type needs keystoneauth1 and a catalog",
            id="catalog-without-credentials",
        ),
        pytest.param(
            ["--os-auth-type", "v3password", "--url", "http://127.0.0.1:1"],
            True,
            "keystoneauth (v3password): Auth plugin requires parameters which were not given: "
            "auth_url",
            id="missing-options",
        ),
        pytest.param(
            ["--os-auth-type", "nonesuch", "--url", "http://127.0.0.1:1"],
            True,
            "--os-auth-type 'nonesuch'",
            id="unknown-plugin",
        ),
        pytest.param(["--url", "ftp://x"], True, "is not an http:// or https:// URL", id="url"),
        pytest.param(
            ["--url", "http://127.0.0.1:1"],
            True,
            "cannot reach http://127.0.0.1:1/tasks",
            id="down",
        ),
    ],
)
def test_bad_credentials_or_service_are_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    argv: list[str],
    keystoneauth: bool,
    says: str,
) -> None:
    _clouds_yaml(monkeypatch, tmp_path, "http://127.0.0.1:1/v3")
    if not keystoneauth:
        monkeypatch.setitem(sys.modules, "keystoneauth1", None)  # not installed
    status, out, err = run(capsys, "tasks", "list", *argv)
    assert (status, out) == (commands.EXIT_ERROR, "")
    assert len(err.splitlines()) == 1 and says in err, err
