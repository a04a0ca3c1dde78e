"""Content negotiation: a page only for a request that prefers HTML; JSON for every API client."""

from __future__ import annotations

import pytest

from tasktoolkit.pages import prefers_html

CASES = [
    pytest.param(None, False, id="no-accept"),
    pytest.param("", False, id="empty"),
    pytest.param("*/*", False, id="anything"),
    pytest.param("application/json", False, id="json"),
    pytest.param("text/html, application/json", False, id="tie-goes-to-json"),
    pytest.param("application/json, text/html;q=0.9", False, id="json-rated-higher"),
    pytest.param("text/html;q=0", False, id="html-refused"),
    pytest.param("text/html;q=0, */*", False, id="html-refused-anything-else"),
    pytest.param("text/html;;;q=x", False, id="malformed"),
    pytest.param(
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
        True,
        id="chromium",
    ),
    pytest.param("text/html,application/xhtml+xml,*/*;q=0.8", True, id="firefox"),
    pytest.param("text/html", True, id="html-only"),
    pytest.param("text/html, */*", True, id="html-named-over-anything"),
    pytest.param("TEXT/HTML", True, id="case-insensitive"),
    pytest.param("text/*;q=0.9, application/json;q=0.5", True, id="text-rated-higher"),
    pytest.param("text/html;level=1, */*;q=0.1", True, id="with-parameters"),
]


@pytest.mark.parametrize(("accept", "html"), CASES)
def test_prefers_html(accept: str | None, html: bool) -> None:
    assert prefers_html(accept) is html
