"""The screenshots in ``docs/pages.md`` and the README, made again from the sample app.

``python -m tests.pages.screenshots [FOLDER]`` (default ``docs/images``) serves
the sample on a throw-away SQLite database with its agents, makes a bulk
operation, a failing one with a retry, and photographs their pages in
headless chromium (``/usr/bin/chromium``) while they run and once they end.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from playwright.sync_api import sync_playwright

from sample_app._client import Client
from sample_app._server import BackgroundServer
from sample_app.agents import Agents
from sample_app.app import make_app
from sample_app.engine import create_sample_engine
from tests.pages.conftest import CHROMIUM, CHROMIUM_ARGS

VIEW = {"width": 1100, "height": 760}


def _bulk(client: Client, network_id: str, names: tuple[str, ...]) -> str:
    reply = client.post("/ports", {"ports": [{"network_id": network_id, "name": n} for n in names]})
    assert reply.status == 202, reply.body
    return urljoin(client.base_url, reply.header("Operation-Location"))


def _final(page: Any) -> None:
    page.wait_for_selector("main#tt-live:not([data-watch])", state="attached", timeout=60_000)


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_sample_engine(f"sqlite:///{Path(tmp) / 'shots.db'}", create=True)
        with (
            BackgroundServer(make_app(engine)) as server,
            Agents(engine, count=3, task_delay=1.2),
            sync_playwright() as driver,
        ):
            browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=VIEW)
            client = Client(server.url)
            network = client.post("/networks", {"network": {"name": "demo-net"}}).body["network"]

            page.goto(_bulk(client, network["id"], ("web", "db", "cache")))
            time.sleep(3.5)
            page.screenshot(path=folder / "operation-running.png")
            _final(page)
            page.screenshot(path=folder / "operation-succeeded.png")

            page.goto(_bulk(client, network["id"], ("flaky-l2_wiring", "fail-dhcp_provisioning")))
            _final(page)
            page.screenshot(path=folder / "operation-failed-retried.png")

            page.goto(server.url + "/operations")
            page.screenshot(path=folder / "operations.png")
            browser.close()
        engine.dispose()
    for shot in sorted(folder.glob("*.png")):
        print(f"{shot} {shot.stat().st_size:,} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images"))
