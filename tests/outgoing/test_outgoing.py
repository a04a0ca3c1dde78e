"""Outgoing calls carry the request id: each client's hook, against a real HTTP server running
the toolkit's middlewares, which records what it received as its operation's global request id.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from keystoneauth1 import adapter
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker

from sample_app._server import BackgroundServer
from tasktoolkit import Settings, Toolkit, orm
from tasktoolkit.context import RequestContext, new_request_id, request_context
from tasktoolkit.orm import Operation
from tasktoolkit.outgoing import (
    REQUEST_ID_HEADER,
    KeystoneSession,
    RequestsSession,
    async_httpx_event_hooks,
    httpx_event_hooks,
    outgoing_request_id,
    request_id_headers,
)
from tests.middleware.apps import cluster_app

#: A sender: (base URL, path, extra headers) -> the request id the server answered with.
Send = Callable[[str, str, dict[str, str]], str]


def _requests(base: str, path: str, headers: dict[str, str]) -> str:
    with RequestsSession() as session:
        return session.post(base + path, headers=headers).headers["X-Request-Id"]


def _httpx(base: str, path: str, headers: dict[str, str]) -> str:
    with httpx.Client(event_hooks=httpx_event_hooks()) as client:
        return client.post(base + path, headers=headers).headers["X-Request-Id"]


def _async_httpx(base: str, path: str, headers: dict[str, str]) -> str:
    async def send() -> str:
        async with httpx.AsyncClient(event_hooks=async_httpx_event_hooks()) as client:
            return (await client.post(base + path, headers=headers)).headers["X-Request-Id"]

    # In a thread of its own (another test may leave an event loop running in this one:
    # Playwright's), in a copy of the caller's context, as an asyncio task runs.
    answered: list[str] = []
    context = contextvars.copy_context()
    thread = threading.Thread(target=lambda: answered.append(context.run(asyncio.run, send())))
    thread.start()
    thread.join(timeout=30)
    return answered[0]


def _keystone_session(base: str, path: str, headers: dict[str, str]) -> str:
    session = KeystoneSession()
    try:
        return str(session.post(base + path, headers=headers).headers["X-Request-Id"])
    finally:
        session.session.close()


def _keystone_adapter(base: str, path: str, headers: dict[str, str]) -> str:
    session = KeystoneSession()
    try:
        peer = adapter.Adapter(session, endpoint_override=base)
        return str(peer.post(path, headers=headers).headers["X-Request-Id"])
    finally:
        session.session.close()


def _urllib(base: str, path: str, headers: dict[str, str]) -> str:
    request = urllib.request.Request(
        base + path, data=b"", method="POST", headers={**request_id_headers(), **headers}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.headers["X-Request-Id"])


SENDERS = [
    pytest.param(_requests, id="requests"),
    pytest.param(_httpx, id="httpx"),
    pytest.param(_async_httpx, id="httpx-async"),
    pytest.param(_keystone_session, id="keystoneauth-session"),
    pytest.param(_keystone_adapter, id="keystoneauth-adapter"),
    pytest.param(_urllib, id="request_id_headers"),
]
LOCAL, GLOBAL, EXPLICIT = new_request_id(), new_request_id(), new_request_id()
#: The context the call is made in, the headers it sets itself, and what the next service
#: records as its global request id.
CASES = [
    pytest.param(RequestContext(LOCAL), {}, LOCAL, id="the-requests-id"),
    pytest.param(RequestContext(LOCAL, GLOBAL), {}, GLOBAL, id="its-global-id-first"),
    pytest.param(None, {}, None, id="outside-a-request-none"),
    pytest.param(
        RequestContext(LOCAL), {"x-openstack-request-id": EXPLICIT}, EXPLICIT, id="explicit-wins"
    ),
]


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sessionmaker[Session]]:
    path: Path = tmp_path_factory.mktemp("outgoing") / "next.db"
    engine = orm.prepare_engine(create_engine(f"sqlite:///{path}"))
    orm.create_all(engine)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture(scope="module")
def next_service(sessions: sessionmaker[Session]) -> Iterator[str]:
    """Another service behind the toolkit's middlewares, served over HTTP; its base URL."""
    engine = sessions.kw["bind"]
    toolkit = Toolkit(engine, Settings())
    with BackgroundServer(toolkit.wsgi(cluster_app(sessions, task_names=[]))) as server:
        yield server.url
    toolkit.close()


def _recorded(sessions: sessionmaker[Session], operation_id: str) -> Any:
    with sessions() as session:
        operation = session.get(Operation, operation_id)
        assert operation is not None
        return operation.global_request_id


@pytest.mark.parametrize("send", SENDERS)
@pytest.mark.parametrize(("ctx", "headers", "recorded"), CASES)
def test_the_next_service_records_the_id_as_its_global_request_id(
    next_service: str,
    sessions: sessionmaker[Session],
    send: Send,
    ctx: RequestContext | None,
    headers: dict[str, str],
    recorded: str | None,
) -> None:
    with request_context(ctx):
        operation_id = send(next_service, "/nothing", headers)
    assert _recorded(sessions, operation_id) == recorded


@pytest.mark.parametrize(
    "send",
    [
        pytest.param(
            lambda s, url: s.post(url, global_request_id=EXPLICIT), id="session-argument"
        ),
        pytest.param(
            lambda s, url: adapter.Adapter(s, global_request_id=EXPLICIT).post(url),
            id="adapter-global-request-id",
        ),
    ],
)
def test_keystoneauths_own_global_request_id_wins(
    next_service: str, sessions: sessionmaker[Session], send: Callable[[Any, str], Any]
) -> None:
    session = KeystoneSession()
    try:
        with request_context(RequestContext(LOCAL)):
            operation_id = send(session, f"{next_service}/nothing").headers["X-Request-Id"]
    finally:
        session.session.close()
    assert _recorded(sessions, operation_id) == EXPLICIT


def test_the_id_sent_is_the_contexts() -> None:
    assert outgoing_request_id() is None
    assert request_id_headers() == {}
    with request_context(RequestContext(LOCAL)):
        assert request_id_headers() == {REQUEST_ID_HEADER: LOCAL}
    with request_context(RequestContext(LOCAL, GLOBAL)):
        assert outgoing_request_id() == GLOBAL
    assert REQUEST_ID_HEADER == "X-OpenStack-Request-ID"


def test_a_name_that_is_not_there_is_an_attribute_error() -> None:
    import tasktoolkit.outgoing

    with pytest.raises(AttributeError, match="nothing"):
        tasktoolkit.outgoing.nothing  # noqa: B018
