"""The composition root: one :class:`Toolkit` per database, and everything made from it.

A host builds one ``Toolkit`` from its engine (or a URL) and one
:class:`~tasktoolkit.settings.Settings`, as it builds one Celery app or one
Flask-SQLAlchemy extension, and gets every part from it, each wired with the
same settings and the same engine (one pool: the middleware's writes, the
endpoints' reads and the workers' moves all go through it):

- :meth:`Toolkit.wsgi`: the request-id and operation middlewares around an app;
- :meth:`Toolkit.mount`: the task endpoints on a Routes mapper;
- :meth:`Toolkit.worker`: a worker claiming tasks from the database;
- :meth:`Toolkit.reap` and :meth:`Toolkit.purge`: the deadlines and the expiry;
- the queue bridges, which a bridge class makes from a toolkit
  (``CeleryBridge(toolkit, app)``).

Example::

    toolkit = Toolkit(engine, Settings(request_id_header="X-OpenStack-Request-ID"))
    toolkit.mount(mapper, collections={"ports": Port})
    app = toolkit.wsgi(Router(mapper))

    worker = toolkit.worker(["l2_wiring"])           # in a worker process
    toolkit.reap()                                   # in a periodic job
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session, sessionmaker

from tasktoolkit.errors import ConfigurationError
from tasktoolkit.hooks import ENGINE_OPTION, hooks_of
from tasktoolkit.settings import Settings, settings_or_default

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from tasktoolkit.endpoints import ResourceVisibility, TaskEndpoints
    from tasktoolkit.orm import PurgeResult, ReapResult, TaskResource, Worker

__all__ = ["Toolkit"]


class Toolkit:
    """Everything the toolkit does for one database, with one :class:`Settings`.

    :param bind: the host's engine (shared: the toolkit uses its pool), or a
        database URL to make one from.
    :param settings: every knob; default :class:`Settings()`.
    :param engine_options: passed to ``create_engine`` when ``bind`` is a URL.
    """

    def __init__(
        self,
        bind: Engine | str | URL,
        settings: Settings | None = None,
        **engine_options: Any,
    ) -> None:
        from tasktoolkit.orm import prepare_engine

        if isinstance(bind, str | URL):
            bind = create_engine(bind, **engine_options)
        elif engine_options:
            raise TypeError("engine options are for a URL; the engine given is made already")
        if not isinstance(bind, Engine):
            raise TypeError(f"Toolkit needs an Engine or a database URL, got {bind!r}")
        settings = settings_or_default(settings)
        self.engine: Engine = prepare_engine(bind)
        self.settings: Settings = settings
        if settings.hooks:
            carried = hooks_of(self.engine)
            if carried and carried != settings.hooks:
                raise ConfigurationError(
                    "this engine carries another toolkit's hooks already: one toolkit per engine"
                )
            self.engine.update_execution_options(**{ENGINE_OPTION: settings.hooks})
        #: A session per unit of work, on the toolkit's engine.
        self.sessions: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Toolkit({self.engine.url.render_as_string(hide_password=True)!r})"

    # -- HTTP ----------------------------------------------------------------

    def wsgi(self, app: WSGIApplication) -> WSGIApplication:
        """``app`` behind the toolkit's middlewares: request ids, then operations."""
        from tasktoolkit.middleware import OperationMiddleware, RequestIdMiddleware

        operations = OperationMiddleware(app, engine=self.engine, settings=self.settings)
        return RequestIdMiddleware(operations, settings=self.settings)

    def mount(
        self,
        mapper: Any,
        *,
        collections: Mapping[str, type[TaskResource]],
        session_factory: Callable[[], Session] | None = None,
        visibility: ResourceVisibility | None = None,
    ) -> TaskEndpoints:
        """Connect the task endpoints on a Routes ``mapper``; returns their WSGI app.

        :param collections: URL collection name -> resource model (``{"ports": Port}``).
        :param session_factory: the host's sessions (default: the toolkit's).
        :param visibility: whether a caller may see a resource (default: it
            exists and is in the caller's project).
        """
        from tasktoolkit.endpoints import mount

        return mount(
            mapper,
            collections=collections,
            session_factory=session_factory or self.sessions,
            settings=self.settings,
            visibility=visibility,
        )

    # -- workers and upkeep ------------------------------------------------

    def worker(
        self,
        names: Iterable[str],
        *,
        queues: Iterable[str | None] = (None,),
        host: str | None = None,
    ) -> Worker:
        """A worker claiming tasks ``names`` from ``queues`` (``None``: the default queue).

        :param host: its identity; ``<hostname>:<pid>`` by default.
        """
        from tasktoolkit.orm import Worker

        return Worker(self.engine, names, queues=queues, host=host, settings=self.settings)

    def reap(
        self,
        *,
        request_timeout: timedelta | None = None,
        start_timeout: timedelta | None = None,
    ) -> ReapResult:
        """Enforce every deadline of active records once (:func:`tasktoolkit.orm.reap`),
        with the toolkit's settings (``batch_size``, ``reap_every``, ``deadline``, ...).

        :param request_timeout: also end the requests that started longer ago
            than this, whatever the request timeout they were opened with.
        :param start_timeout: also fail the tasks pending since their spawn for
            longer than this, whatever their name's start timeout.
        """
        from tasktoolkit.orm import reap

        return reap(
            self.engine,
            settings=self.settings,
            request_timeout=request_timeout,
            start_timeout=start_timeout,
        )

    def purge(
        self,
        *,
        older_than: timedelta = timedelta(0),
        dry_run: bool = False,
        progress: Callable[[str, int], None] | None = None,
    ) -> PurgeResult:
        """Delete expired records in short batches (:func:`tasktoolkit.orm.purge`), with
        the toolkit's settings (``batch_size``, ``deadline``, ``retryable``).

        :param older_than: only records that expired at least this long ago.
        :param dry_run: count only; nothing is deleted.
        :param progress: called after every batch with ``("tasks" or "operations",
            rows deleted so far from that table)``.
        """
        from tasktoolkit.orm import purge

        return purge(
            self.engine,
            settings=self.settings,
            older_than=older_than,
            dry_run=dry_run,
            progress=progress,
        )

    def close(self) -> None:
        """Take the toolkit's hooks off the engine (the host's engine and its pool stay)."""
        if self.settings.hooks and hooks_of(self.engine) == self.settings.hooks:
            self.engine.update_execution_options(**{ENGINE_OPTION: None})
