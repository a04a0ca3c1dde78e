"""The pipeline of docs/openstack.md, for real: oslo.middleware's cors and RequestId,
keystonemiddleware's authtoken (its AuthTokenFixture standing in for keystone), the toolkit's
filters and the sample app, on each database; logged with oslo.log; called with keystoneauth."""

from __future__ import annotations

import configparser
import importlib
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import webtest
from keystoneauth1 import fixture as ks_tokens
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint
from keystonemiddleware.fixture import AuthTokenFixture
from oslo_context.context import RequestContext
from paste.deploy import loadapp
from sqlalchemy.engine import URL

from tasktoolkit.context import is_valid_request_id, new_request_id
from tasktoolkit.middleware import OperationMiddleware
from tests.sample_app.conftest import ROOT, sample_db  # noqa: F401  (a fixture)

DOC = ROOT / "docs" / "openstack.md"
ORIGIN = "https://dashboard.example.org"
HEADER = "X-OpenStack-Request-ID"
EXPOSED = {"X-OpenStack-Request-ID", "Operation-Location", "Retry-After", "ETag"}


def documented_keystoneauth() -> str:
    found = re.search(
        r"<!-- keystoneauth-example -->\n```python\n(.*?)```", DOC.read_text(), re.DOTALL
    )
    assert found is not None, "docs/openstack.md has no python after <!-- keystoneauth-example -->"
    return found.group(1)


def documented_ini() -> str:
    found = re.search(r"<!-- openstack-paste -->\n```ini\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert found is not None, "docs/openstack.md has no ini after <!-- openstack-paste -->"
    return found.group(1)


@pytest.fixture
def tokens() -> Iterator[dict[str, str]]:
    """keystone, as keystonemiddleware's fixture fakes it: a token per kind of caller."""
    auth = AuthTokenFixture()
    auth.setUp()
    made = {}
    for name, project, roles in (
        ("member", "p1", ["member", "reader"]),
        ("other", "p2", ["member", "reader"]),
    ):
        made[name] = uuid.uuid4().hex
        auth.add_token_data(
            token_id=made[name], user_id=f"user-{name}", project_id=project, role_list=roles
        )
    system = ks_tokens.V3Token(user_id="auditor")
    system.set_system_scope()
    system.add_role(name="reader")
    made["system_reader"] = auth.add_token(system)
    yield made
    auth.cleanUp()


def _close(app: Any) -> None:
    """Close the pools the loaded pipeline used (the sample's toolkit's: one engine)."""
    while app is not None:
        if isinstance(app, OperationMiddleware):
            app.close()
            app.engine.dispose()  # the sample's toolkit's, which the app uses too
        app = next(
            (getattr(app, n) for n in ("app", "application", "_app") if hasattr(app, n)), None
        )


@pytest.fixture
def pipeline(
    sample_db: URL,  # noqa: F811
    tmp_path: Path,
    tokens: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Any]:
    """The documented pipeline, its toolkit and app made the sample's, loaded by PasteDeploy."""
    monkeypatch.setenv("SAMPLE_APP_DB_URL", sample_db.render_as_string(hide_password=False))
    importlib.reload(importlib.import_module("sample_app.wsgi"))
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(documented_ini())
    for name in ("filter:tasktoolkit_request_id", "filter:tasktoolkit_operations"):
        assert ini[name]["toolkit"] == "myservice.wsgi:toolkit"
        ini[name]["toolkit"] = "sample_app.wsgi:toolkit"  # the host's Toolkit: the sample's
    ini["app:api"] = {"paste.app_factory": "sample_app.wsgi:app_factory"}
    authtoken = ini["filter:authtoken"]
    del authtoken["oslo_config_project"]  # no service config file here: the options inline
    authtoken["delay_auth_decision"] = "false"
    authtoken["www_authenticate_uri"] = "http://127.0.0.1:5000/"
    path = tmp_path / "api-paste.ini"
    with path.open("w") as out:
        ini.write(out)
    app = loadapp(f"config:{path}")
    yield app
    _close(app)


def auth(token: str, **headers: str) -> dict[str, str]:
    return {"X-Auth-Token": token, **headers}


def test_one_request_id_everywhere_and_in_oslo_logs(
    pipeline: Any, tokens: dict[str, str], oslo_lines: Callable[[], list[str]]
) -> None:
    app = webtest.TestApp(pipeline)
    inbound = new_request_id()
    reply = app.post_json(
        "/networks", {"network": {"name": "n"}}, headers=auth(tokens["member"], **{HEADER: inbound})
    )
    request_id = reply.headers[HEADER]
    assert is_valid_request_id(request_id) and request_id != inbound
    assert [name for name, _ in reply.headerlist if name.lower() == HEADER.lower()] == [HEADER]
    assert reply.headers["Operation-Location"].endswith(f"/operations/{request_id}")
    operation = app.get(f"/operations/{request_id}", headers=auth(tokens["member"])).json[
        "operation"
    ]
    assert (operation["project_id"], operation["user_id"]) == ("p1", "user-member")
    assert operation["global_request_id"] == inbound
    # keystonemiddleware's own line, made in the request before the service has a context.
    (line,) = [
        line for line in oslo_lines() if "Authenticating user token" in line and request_id in line
    ]
    assert f"[{inbound} {request_id} " in line


def test_a_401_and_an_error_body_carry_the_header_id(pipeline: Any, tokens: dict[str, str]) -> None:
    app = webtest.TestApp(pipeline)
    refused = app.get("/networks", status=401)
    assert is_valid_request_id(refused.headers[HEADER])
    missing = app.get(f"/operations/{new_request_id()}", headers=auth(tokens["member"]), status=404)
    assert missing.json["errors"][0]["request_id"] == missing.headers[HEADER]


def test_cors_exposes_the_toolkits_headers(pipeline: Any, tokens: dict[str, str]) -> None:
    app = webtest.TestApp(pipeline)
    reply = app.post_json(
        "/networks",
        {"network": {"name": "n"}},
        headers=auth(tokens["member"], Origin=ORIGIN),
    )
    exposed = {h.strip() for h in reply.headers["Access-Control-Expose-Headers"].split(",")}
    assert EXPOSED <= exposed


def test_a_system_reader_sees_every_project(pipeline: Any, tokens: dict[str, str]) -> None:
    app = webtest.TestApp(pipeline)
    made = {
        app.post_json("/networks", {"network": {"name": n}}, headers=auth(tokens[n])).headers[
            HEADER
        ]
        for n in ("member", "other")
    }
    seen = app.get("/operations", headers=auth(tokens["system_reader"])).json["operations"]
    assert made <= {o["id"] for o in seen}
    mine = app.get("/operations", headers=auth(tokens["member"])).json["operations"]
    assert {o["project_id"] for o in mine} == {"p1"}


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served(pipeline: Any) -> Iterator[str]:
    """The pipeline on 127.0.0.1 (wsgiref, a thread): its URL."""
    server: WSGIServer = make_server("127.0.0.1", 0, pipeline, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_keystoneauth_sends_a_global_id_that_is_kept(served: str, tokens: dict[str, str]) -> None:
    client = ks_session.Session()
    global_id = new_request_id()
    reply = client.post(
        f"{served}/networks",
        json={"network": {"name": "k"}},
        headers={"X-Auth-Token": tokens["member"]},
        global_request_id=global_id,
        raise_exc=False,
    )
    assert reply.status_code == 201, reply.text
    request_id = reply.headers[HEADER]
    assert request_id != global_id
    followed = client.get(
        reply.headers["Operation-Location"],
        headers={"X-Auth-Token": tokens["member"]},
        raise_exc=False,
    )
    assert followed.status_code == 200, followed.text
    operation = followed.json()["operation"]
    assert (operation["id"], operation["global_request_id"]) == (request_id, global_id)


def test_the_documented_adapter_sends_the_callers_global_id(
    served: str, tokens: dict[str, str]
) -> None:
    """docs/openstack.md's client, run as written: its global id is the operation's."""
    global_id = new_request_id()
    names: dict[str, Any] = {
        "auth": token_endpoint.Token(served, tokens["member"]),
        "context": RequestContext(global_request_id=global_id),
    }
    exec(documented_keystoneauth(), names)
    reply = names["reply"]
    assert reply.status_code == 201, reply.text
    followed = ks_session.Session().get(
        reply.headers["Operation-Location"], headers={"X-Auth-Token": tokens["member"]}
    )
    operation = followed.json()["operation"]
    assert (operation["id"], operation["global_request_id"]) == (reply.headers[HEADER], global_id)
