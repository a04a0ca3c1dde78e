"""An operation's page renders on the server in under 50 ms with 100 tasks and 150 attempts.

One bulk ``POST``'s operation on 25 clusters with four tasks each: half the
tasks succeeded at once, half failed once (retryably) and succeeded on a
second attempt, so 100 tasks and 150 attempts. Side by side, interleaved,
each through the mounted endpoints (``Request.blank(...).get_response``): the
operation's page (``Accept: text/html``: the read, the views, the timeline
and the Jinja2 render) and the same operation's JSON; and the render alone,
from the document the JSON shows. Also the size of the pages' own
stylesheet and script together (bar: under 30 KiB).

Figures: ``page_render_ms_100_tasks`` (the whole page response, median; bar:
< 50), ``page_template_ms_100_tasks`` (the render alone), ``page_json_ms_100_tasks``
(the JSON of the same operation), ``page_assets_bytes``.

Warning: drops and re-creates the toolkit's and the test models' tables at ``--db-url``.
"""

from __future__ import annotations

import routes
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from webob import Request

from benchmarks._harness import Bench, fresh_engine, interleaved
from tasktoolkit import Settings, orm
from tasktoolkit.context import RequestContext, new_request_id, request_context
from tasktoolkit.endpoints import Router, mount
from tasktoolkit.orm import TaskRules
from tasktoolkit.orm._operations import OperationFields, end_request, open_operation
from tasktoolkit.orm._transitions import fail_task, start_task, succeed_task
from tests.models import Cluster

NAME = "pages"
_NAMES = ("l2_wiring", "dhcp_provisioning", "anti_spoofing", "security_groups")
_HEADERS = {"X-Project-Id": "p", "X-User-Id": "u"}
_BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def _operation(engine: Engine) -> str:
    """The bulk operation: 100 tasks, every other one retried once (150 attempts)."""
    with Session(engine, expire_on_commit=False) as s:
        rid = new_request_id()
        fields = OperationFields(rid, "POST", "/clusters", project_id="p", user_id="u")
        open_operation(s.connection(), fields)
        clusters = [Cluster(name=f"c{n}", project_id="p") for n in range(25)]
        s.add_all(clusters)
        s.flush()
        with request_context(RequestContext(rid, project_id="p", operation_id=rid)):
            tasks = orm.spawn_tasks(
                s, [(c, name) for c in clusters for name in _NAMES], rules=TaskRules(max_attempts=2)
            )
        end_request(s.connection(), rid, 202)
        s.commit()
        for n, task in enumerate(tasks):
            start_task(s, task.id, host=f"agent-{n % 4}")
            if n % 2:
                fail_task(s, task.id, code="agent_busy", message="the agent is busy", retry=True)
                start_task(s, task.id, host=f"agent-{(n + 1) % 4}")
            succeed_task(s, task.id, message="done")
        s.commit()
        return rid


def run(bench: Bench) -> dict[str, float]:
    engine = fresh_engine(bench)
    rounds = 10 if bench.quick else 40
    try:
        rid = _operation(engine)
        mapper = routes.Mapper()
        endpoints = mount(
            mapper,
            collections={"clusters": Cluster},
            session_factory=sessionmaker(engine),
            settings=Settings(),
        )
        app = Router(mapper)
        pages = endpoints.pages
        assert pages is not None, "the [pages] extra (Jinja2) is not installed"
        path = f"/operations/{rid}"

        def get(accept: str) -> Request:
            return Request.blank(path, headers={**_HEADERS, "Accept": accept})

        json_reply = get("application/json").get_response(app)
        document = json_reply.json
        assert len(document["operation"]["tasks"]) == 100
        assert sum(len(t["attempts"]) for t in document["operation"]["tasks"]) == 150
        page_request = pages.page_request(get(_BROWSER))

        def page() -> None:
            reply = get(_BROWSER).get_response(app)
            assert reply.status_int == 200 and reply.content_type == "text/html"

        def json_() -> None:
            assert get("application/json").get_response(app).status_int == 200

        def render() -> None:
            pages.render("operation", document, page_request)

        page(), json_(), render()  # warm up: templates compiled, connections made
        times = interleaved({"page": page, "json": json_, "render": render}, rounds=rounds)
        html_bytes = len(get(_BROWSER).get_response(app).body)
        endpoints.close()
    finally:
        orm.drop_all(engine)
        engine.dispose()
    assets = pages.assets.size
    page_ms, render_ms, json_ms = (times[k] * 1000 for k in ("page", "render", "json"))
    bench.table(
        "an operation of 100 tasks and 150 attempts, GET through the endpoints",
        [
            ("JSON (application/json)", json_ms, 1.0),
            ("page (text/html): read, views, timeline, render", page_ms, page_ms / json_ms),
            ("the render alone (from the JSON's document)", render_ms, render_ms / json_ms),
        ],
        ["response", "median ms", "x JSON"],
    )
    bench.table(
        "the page's size",
        [
            ("the page's HTML", html_bytes, "-"),
            ("its stylesheet and script together", assets, "< 30,720"),
        ],
        ["what", "bytes", "bar"],
    )
    return {
        "page_render_ms_100_tasks": page_ms,
        "page_template_ms_100_tasks": render_ms,
        "page_json_ms_100_tasks": json_ms,
        "page_assets_bytes": float(assets),
    }
