"""The sample's HTTP API: networks and ports, webob controllers on a Routes mapper.

.. warning::

   **The sample does no authentication.** It trusts ``X-Project-Id`` (default
   ``demo``) and ``X-Roles`` (``admin`` for an admin) as if an authentication
   middleware such as keystonemiddleware had set them. Anyone who can reach it
   can claim any project. Put a real authentication middleware in front of
   anything built from it.

=======================================  =================================================
``POST /networks``                       201 ``{"network": {...}}``; spawns no task
``GET /networks``, ``GET /networks/ID``  ``{"networks": [...]}``, ``{"network": {...}}``
``DELETE /networks/ID``                  204; its ports and their tasks go with it
``POST /ports``                          202 ``{"port": {...}}`` or bulk ``{"ports": [...]}``
``GET /ports``, ``GET /ports/ID``        ``status`` derived from the tasks
``PUT /ports/ID``                        202; spawns ``security_groups`` (one per port at once)
``DELETE /ports/ID``                     202; spawns ``unbind``, which deletes the row
=======================================  =================================================

A new port's ``dhcp_provisioning`` and ``security_groups`` run after its
``l2_wiring`` (and fail with it); ``security_groups`` is exclusive per port,
so two quick updates of one port run theirs one after the other.

Example::

    engine = create_sample_engine("sqlite:///sample_app.db", create=True)
    wsgi_app = make_app(engine)          # the middlewares, the API and the task endpoints
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import webob
from routes import Mapper
from sqlalchemy import delete, exists, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from sample_app.engine import DEADLINE
from sample_app.models import (
    PORT_CREATE_AFTER,
    PORT_CREATE_TASKS,
    PORT_DELETE_TASK,
    PORT_UPDATE_TASK,
    Network,
    Port,
    port_task_rules,
)
from tasktoolkit import Settings, Toolkit
from tasktoolkit.caller import (
    TASKS_LIST,
    Authorize,
    Caller,
    CallerGetter,
    check_caller,
    default_authorize,
    keystone_caller,
)
from tasktoolkit.endpoints import Router
from tasktoolkit.errors import (
    DatabaseUnavailableError,
    InvalidCallerError,
    TaskToolkitError,
    database_unavailable,
)
from tasktoolkit.hooks import Hook
from tasktoolkit.http_errors import error_response, response_for
from tasktoolkit.middleware import set_operation_target
from tasktoolkit.orm import (
    ACTIVE_TASK_STATES,
    Task,
    deadline,
    prepare_engine,
    spawn_tasks,
)
from tasktoolkit.wsgi_input import MAX_BODY as WSGI_MAX_BODY
from tasktoolkit.wsgi_input import query_pairs, read_body

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "DEFAULT_PROJECT",
    "DEFAULT_ROLES",
    "SampleAPI",
    "make_app",
    "make_router",
    "sample_caller",
    "sample_settings",
]

#: The project of a request without ``X-Project-Id`` (and without system scope).
DEFAULT_PROJECT = "demo"
#: The roles of a request without ``X-Roles``: a member of its project.
DEFAULT_ROLES = frozenset({"member"})
#: The most ports one bulk request may create.
MAX_BULK = 100
#: The largest request body accepted, in bytes (the toolkit's, which a keyed request's
#: fingerprint reads too).
MAX_BODY = WSGI_MAX_BODY
_NAME_MAX = 255


def sample_caller(environ: Mapping[str, Any]) -> Caller:
    """The caller as the sample trusts it: ``X-Project-Id`` (default ``demo``), ``X-Roles``
    (default ``member``), ``OpenStack-System-Scope``.

    A system-scoped caller (``OpenStack-System-Scope: all``) has no project. Trusting
    these headers is only safe behind an authentication middleware that sets them;
    the sample has none.
    """
    caller = keystone_caller(environ)
    if not caller.roles:
        caller = dataclasses.replace(caller, roles=DEFAULT_ROLES)
    if caller.project_id is None and caller.system_scope is None:
        return dataclasses.replace(caller, project_id=DEFAULT_PROJECT)
    return caller


class APIError(Exception):
    """An error answered in the contract's format: ``{"errors": [{...}]}``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def _bad_request(detail: str, code: str = "sample_app.invalid_body") -> APIError:
    return APIError(400, code, detail)


def _json(body: object, status: int = 200) -> webob.Response:
    response = webob.Response(status=status, content_type="application/json", charset="utf-8")
    response.text = json.dumps(body, separators=(",", ":"))
    return response


# -- request bodies ----------------------------------------------------------


def _read_json(request: webob.Request) -> Any:
    # Bounded, and a body shorter than its Content-Length is a 400 (the toolkit's errors).
    raw = read_body(request.environ, limit=MAX_BODY)
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad_request(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise _bad_request("the body is nested too deeply") from None


def _envelope(body: Any, key: str) -> dict[str, Any]:
    if not isinstance(body, dict) or set(body) != {key}:
        raise _bad_request(f'the body must be an object with one key, "{key}"')
    inner = body[key]
    if not isinstance(inner, dict):
        raise _bad_request(f"{key}: must be an object")
    return inner


def _check_fields(
    where: str, fields: dict[str, Any], allowed: Iterable[str], required: Iterable[str] = ()
) -> None:
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise _bad_request(
            f"{where}: unknown attribute {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}"
        )
    for name in required:
        if name not in fields:
            raise _bad_request(f"{where}: {name!r} is required")


def _name(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _bad_request(f"{where}.name: must be a string, got {type(value).__name__}")
    if len(value) > _NAME_MAX:
        raise _bad_request(f"{where}.name: at most {_NAME_MAX} characters, got {len(value)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise _bad_request(f"{where}.name: control characters are not allowed")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        # "\ud800" in JSON decodes to a lone surrogate, which has no UTF-8.
        raise _bad_request(f"{where}.name: lone surrogates (\\ud800-\\udfff) are not text")
    return value


def _uuid(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _bad_request(f"{where}: must be a string, got {type(value).__name__}")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise _bad_request(f"{where}: {value[:64]!r} is not a UUID") from None


@dataclass(frozen=True, slots=True)
class _PortRequest:
    network_id: str
    name: str


def _port_request(where: str, fields: Any) -> _PortRequest:
    if not isinstance(fields, dict):
        raise _bad_request(f"{where}: must be an object")
    _check_fields(where, fields, ("network_id", "name"), required=("network_id",))
    return _PortRequest(
        network_id=_uuid(f"{where}.network_id", fields["network_id"]),
        name=_name(where, fields.get("name", "")),
    )


# -- views -------------------------------------------------------------------


def network_view(network: Network, status: str) -> dict[str, Any]:
    """A network as the API shows it."""
    return {
        "id": network.id,
        "name": network.name,
        "status": status,
        "project_id": network.project_id,
    }


def port_view(port: Port, status: str) -> dict[str, Any]:
    """A port as the API shows it; ``status`` is derived from its tasks."""
    return {
        "id": port.id,
        "network_id": port.network_id,
        "name": port.name,
        "status": status,
        "project_id": port.project_id,
    }


# -- the application -----------------------------------------------------------

_Handler = Callable[[webob.Request, Session, Caller], webob.Response]


_ROUTES: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("networks", "/networks", (("GET", "list_networks"), ("POST", "create_network"))),
    ("network", "/networks/{id}", (("GET", "show_network"), ("DELETE", "delete_network"))),
    ("ports", "/ports", (("GET", "list_ports"), ("POST", "create_ports"))),
    (
        "port",
        "/ports/{id}",
        (("GET", "show_port"), ("PUT", "update_port"), ("DELETE", "delete_port")),
    ),
)


class SampleAPI:
    """The networks and ports controllers: one WSGI app routed by a Routes mapper.

    :meth:`connect` puts its routes on a mapper; the toolkit's
    :class:`~tasktoolkit.endpoints.Router` then calls it with the match in
    ``wsgiorg.routing_args``. :func:`make_app` does all of that.

    :param engine: the database (prepared for the toolkit here).
    :param caller_getter: turns the environ into a :class:`~tasktoolkit.caller.Caller`.
    :param authorize: the toolkit's authorization hook; the sample shows every
        project's networks and ports to those who may list every project's tasks.
    :param start_timeout: seconds within which an agent must start a port's
        task (else it fails ``not_started``); ``None``: the models' rules (1 hour).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        caller_getter: CallerGetter = sample_caller,
        authorize: Authorize = default_authorize,
        start_timeout: float | None = None,
    ) -> None:
        self.engine = prepare_engine(engine)
        self.rules = (
            None if start_timeout is None else port_task_rules(timedelta(seconds=start_timeout))
        )
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.caller_getter = caller_getter
        self.authorize = authorize
        self._handlers: dict[str, _Handler] = {
            action: getattr(self, action) for _, _, methods in _ROUTES for _, action in methods
        }

    def connect(self, mapper: Mapper) -> None:
        """Connect the sample's routes on ``mapper`` (a method not listed: 405)."""
        for name, path, methods in _ROUTES:
            for method, action in methods:
                mapper.connect(
                    f"{name}.{action}",
                    path,
                    controller=self,
                    action=action,
                    conditions={"method": [method]},
                )
            # Last, without a method condition: every other method of the path.
            mapper.connect(
                f"{name}.not_allowed",
                path,
                controller=self,
                action="method_not_allowed",
                allowed=",".join(m for m, _ in methods),
            )

    # -- WSGI ----------------------------------------------------------------

    def serves(self, environ: WSGIEnvironment, match: Mapping[str, Any]) -> bool:
        """Whether the route matched takes the method (the router asks; else a 405)."""
        return match.get("action") != "method_not_allowed"

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = webob.Request(environ)
        response = self._dispatch(request)
        return response(environ, start_response)  # type: ignore[no-any-return]

    def _dispatch(self, request: webob.Request) -> webob.Response:
        match = request.environ["wsgiorg.routing_args"][1]
        if match["action"] == "method_not_allowed":
            response = error_response(
                request.environ,
                405,
                "sample_app.method_not_allowed",
                f"{request.method} is not allowed here",
            )
            response.allow = match["allowed"].split(",")
            return response
        handler = self._handlers[match["action"]]
        try:
            caller = check_caller(self.caller_getter(request.environ))
        except InvalidCallerError as exc:
            return response_for(request.environ, exc)
        try:
            # The host's own statements opt in to the toolkit's deadline: a
            # database that does not answer costs a 503, not a hung thread.
            with deadline(DEADLINE), self.sessions() as session, session.begin():
                return handler(request, session, caller)
        except APIError as exc:
            return error_response(request.environ, exc.status, exc.code, exc.detail)
        except TaskToolkitError as exc:  # a body or a query the toolkit's readers refuse
            return response_for(request.environ, exc)
        except Exception as exc:  # the database's errors, SQLAlchemy's or oslo.db's
            if not database_unavailable(exc):
                raise
            return response_for(request.environ, DatabaseUnavailableError())

    # -- scoping -------------------------------------------------------------

    def _visible(self, caller: Caller, model: type[Network] | type[Port]) -> Any:
        if self.authorize(caller, TASKS_LIST, {"project_id": None}):  # every project
            return True
        return model.project_id == caller.project_id

    def _load(
        self,
        session: Session,
        caller: Caller,
        model: type[Network] | type[Port],
        ident: str,
        *,
        lock: bool = False,
    ) -> Any:
        what = model.__resource_type__
        try:
            key = str(uuid.UUID(ident))
        except ValueError:
            key = None
        if key != ident:
            # One form, as the task endpoints take it (and as ids are stored): the
            # lower-case, hyphenated uuid. No '{...}', 'urn:uuid:' or upper case,
            # which MariaDB's default collation would match and PostgreSQL not.
            key = None
        row = None
        if key is not None:
            query = select(model).where(model.id == key, self._visible(caller, model))
            if lock:
                # Serialises the updates and deletes of one resource across processes.
                query = query.with_for_update()
            row = session.execute(query).scalar_one_or_none()
        if row is None:
            raise APIError(404, f"sample_app.{what}_not_found", f"no {what} {ident[:64]!r}")
        return row

    # -- networks ------------------------------------------------------------

    def list_networks(self, request: webob.Request, session: Session, caller: Caller) -> Any:
        _no_query(request)
        rows = session.execute(
            select(Network, Network.status_expression())
            .where(self._visible(caller, Network))
            .order_by(Network.created_at, Network.id)
        ).all()
        return _json({"networks": [network_view(n, s) for n, s in rows]})

    def create_network(self, request: webob.Request, session: Session, caller: Caller) -> Any:
        fields = _envelope(_read_json(request), "network")
        _check_fields("network", fields, ("name",))
        network = Network(
            name=_name("network", fields.get("name", "")),
            project_id=caller.project_id or DEFAULT_PROJECT,
        )
        session.add(network)
        session.flush()
        set_operation_target(request.environ, Network.__resource_type__, network.id)
        return _json({"network": network_view(network, "ACTIVE")}, 201)

    def show_network(self, request: webob.Request, session: Session, caller: Caller) -> Any:
        _no_query(request)
        network = self._load(session, caller, Network, _route_id(request))
        return _json({"network": network_view(network, network.status)})

    def delete_network(self, request: webob.Request, session: Session, caller: Caller) -> Any:
        network = self._load(session, caller, Network, _route_id(request), lock=True)
        busy = session.execute(
            select(Port.id, Task.name, Task.state)
            .join(Task, Task.resource_id == Port.id)
            .where(
                Port.network_id == network.id,
                Task.resource_type == Port.__resource_type__,
                Task.state.in_(ACTIVE_TASK_STATES),
            )
            .limit(1)
        ).first()
        if busy is not None:
            # Deleting now would delete tasks a worker is about to run, and their
            # operation could never finish: refuse until they end.
            raise APIError(
                409,
                "sample_app.network_busy",
                f"port {busy.id} of network {network.id} has task {busy.name!r} {busy.state}; "
                "wait for it to end (GET /ports/<id>/tasks) or cancel it",
            )
        set_operation_target(request.environ, Network.__resource_type__, network.id)
        # A plain SQL DELETE: the database deletes the ports (ON DELETE CASCADE)
        # and, through the toolkit's foreign keys, their tasks.
        session.execute(
            delete(Network).where(Network.id == network.id),
            execution_options={"synchronize_session": False},
        )
        return webob.Response(status=204)

    # -- ports ---------------------------------------------------------------

    def list_ports(self, request: webob.Request, session: Session, caller: Caller) -> Any:
        params = query_pairs(request.environ)
        unknown = sorted({name for name, _ in params} - {"network_id"})
        if unknown:
            raise _bad_request(
                f"unknown query parameter {unknown[0]!r}; allowed: network_id",
                code="sample_app.invalid_filter",
            )
        query = select(Port, Port.status_expression()).where(self._visible(caller, Port))
        network_ids = [value for name, value in params if name == "network_id"]
        if network_ids:
            query = query.where(Port.network_id.in_([_uuid("network_id", v) for v in network_ids]))
        rows = session.execute(query.order_by(Port.created_at, Port.id)).all()
        return _json({"ports": [port_view(p, s) for p, s in rows]})

    def create_ports(self, request: webob.Request, session: Session, caller: Caller) -> Any:
        body = _read_json(request)
        if isinstance(body, dict) and set(body) == {"ports"}:
            items = body["ports"]
            if not isinstance(items, list) or not 1 <= len(items) <= MAX_BULK:
                raise _bad_request(f"ports: must be a list of 1 to {MAX_BULK} ports")
            wanted = [_port_request(f"ports[{i}]", item) for i, item in enumerate(items)]
            bulk = True
        else:
            wanted = [_port_request("port", _envelope(body, "port"))]
            bulk = False
        # A shared lock: a concurrent DELETE of the network (which locks it for
        # update) waits for these ports, then sees their tasks and refuses.
        networks = {
            n.id: n
            for n in session.execute(
                select(Network)
                .where(
                    Network.id.in_(sorted({w.network_id for w in wanted})),
                    self._visible(caller, Network),
                )
                .with_for_update(read=True)
            ).scalars()
        }
        for want in wanted:
            if want.network_id not in networks:
                raise APIError(
                    404, "sample_app.network_not_found", f"no network {want.network_id!r}"
                )
        ports = [
            Port(
                network_id=w.network_id,
                name=w.name,
                project_id=networks[w.network_id].project_id,
            )
            for w in wanted
        ]
        session.add_all(ports)
        # Every task of the request in one statement, under the request's operation.
        spawn_tasks(
            session,
            [(p, name) for p in ports for name in PORT_CREATE_TASKS],
            rules=self.rules,
            after=PORT_CREATE_AFTER,
        )
        views = [port_view(p, "BUILD") for p in ports]
        if not bulk:
            set_operation_target(request.environ, Port.__resource_type__, ports[0].id)
        return _json({"ports": views} if bulk else {"port": views[0]}, 202)

    def show_port(self, request: webob.Request, session: Session, caller: Caller) -> Any:
        _no_query(request)
        port = self._load(session, caller, Port, _route_id(request))
        return _json({"port": port_view(port, port.status)})

    def update_port(self, request: webob.Request, session: Session, caller: Caller) -> Any:
        fields = _envelope(_read_json(request), "port")
        if "network_id" in fields:
            raise _bad_request("port.network_id: a port cannot move to another network")
        _check_fields("port", fields, ("name",), required=("name",))
        name = _name("port", fields["name"])
        port = self._load(session, caller, Port, _route_id(request), lock=True)
        _refuse_if_deleting(session, port)
        port.name = name
        port.spawn_task(PORT_UPDATE_TASK, rules=self.rules)
        set_operation_target(request.environ, Port.__resource_type__, port.id)
        return _json({"port": port_view(port, "BUILD")}, 202)

    def delete_port(self, request: webob.Request, session: Session, caller: Caller) -> Any:
        port = self._load(session, caller, Port, _route_id(request), lock=True)
        active = session.execute(
            select(Task.name, Task.state)
            .where(Task.resource_type == Port.__resource_type__, Task.resource_id == port.id)
            .where(Task.state.in_(ACTIVE_TASK_STATES))
            .order_by(Task.created_at)
        ).all()
        if active:
            # The unbind task deletes the row, and with it any task still to run,
            # whose operation would then never finish: refuse until they end.
            listed = ", ".join(f"{t.name} ({t.state})" for t in active)
            raise APIError(
                409,
                "sample_app.port_busy",
                f"port {port.id} has tasks in progress: {listed}; wait for them to end "
                f"(GET /ports/{port.id}/tasks) or cancel them",
            )
        port.spawn_task(PORT_DELETE_TASK, rules=self.rules)
        set_operation_target(request.environ, Port.__resource_type__, port.id)
        return _json({"port": port_view(port, "BUILD")}, 202)


def _refuse_if_deleting(session: Session, port: Port) -> None:
    deleting = session.execute(
        select(
            exists().where(
                Task.resource_type == Port.__resource_type__,
                Task.resource_id == port.id,
                Task.name == PORT_DELETE_TASK,
                Task.state.in_(ACTIVE_TASK_STATES),
            )
        )
    ).scalar()
    if deleting:
        raise APIError(409, "sample_app.port_deleting", f"port {port.id} is being deleted")


def _route_id(request: webob.Request) -> str:
    return str(request.environ["wsgiorg.routing_args"][1]["id"])


def _no_query(request: webob.Request) -> None:
    params = query_pairs(request.environ)
    if params:
        name = params[0][0]
        raise _bad_request(
            f"unknown query parameter {name!r}; this resource takes none",
            code="sample_app.invalid_filter",
        )


def sample_settings(
    *,
    caller_getter: CallerGetter = sample_caller,
    authorize: Authorize = default_authorize,
    hooks: Iterable[Hook] = (),
) -> Settings:
    """The sample's toolkit settings: its caller getter, the OpenAPI document served, and
    ``hooks`` (metrics, tracing, notifications)."""
    return Settings(
        caller_getter=caller_getter, authorize=authorize, serve_openapi=True, hooks=hooks
    )


def make_router(toolkit: Toolkit, *, start_timeout: float | None = None) -> WSGIApplication:
    """The API without middleware, on ``toolkit``: the sample's routes and the toolkit's endpoints.

    The toolkit's endpoints are mounted for ``networks`` and ``ports``
    (``/ports/<id>/tasks``, ...) plus ``/tasks`` and ``/operations``; the sample's
    own controllers read the same caller getter and authorizer, from the toolkit's
    settings. ``start_timeout`` as for :class:`SampleAPI`.
    """
    settings = toolkit.settings
    api = SampleAPI(
        toolkit.engine,
        caller_getter=settings.caller_getter,
        authorize=settings.authorize,
        start_timeout=start_timeout,
    )
    mapper = Mapper()
    api.connect(mapper)
    toolkit.mount(
        mapper, collections={"networks": Network, "ports": Port}, session_factory=api.sessions
    )
    return Router(mapper)


def make_app(
    engine: Engine,
    *,
    caller_getter: CallerGetter = sample_caller,
    authorize: Authorize = default_authorize,
    start_timeout: float | None = None,
    hooks: Iterable[Hook] = (),
) -> WSGIApplication:
    """The whole stack, from one :class:`~tasktoolkit.Toolkit`: its two middlewares
    around :func:`make_router`.

    The same as ``api-paste.ini``'s pipeline (:mod:`sample_app.wsgi`), in code.
    ``start_timeout`` as for :class:`SampleAPI`; ``hooks`` as for :func:`sample_settings`.
    """
    settings = sample_settings(caller_getter=caller_getter, authorize=authorize, hooks=hooks)
    toolkit = Toolkit(engine, settings)
    return toolkit.wsgi(make_router(toolkit, start_timeout=start_timeout))
