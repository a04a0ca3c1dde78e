"""Content negotiation: whether a request prefers a page to the JSON.

JSON is the default: a request gets a page only when its ``Accept`` rates
``text/html`` above ``application/json``, or as high while naming it more
exactly (a browser's ``text/html,...,*/*;q=0.8``; ``text/html, */*``). No
``Accept``, ``*/*``, ``application/json``, an equal ``text/html,
application/json`` and a malformed header all get JSON, as every API client
did before pages existed. It imports nothing of the pages' templates.

Example::

    >>> prefers_html("text/html,application/xhtml+xml,*/*;q=0.8")
    True
    >>> prefers_html("*/*")
    False
"""

from __future__ import annotations

from webob.acceptparse import AcceptValidHeader, create_accept_header

__all__ = ["prefers_html"]

#: How exactly a media range names a type: ``*/*``, ``text/*``, ``text/html``.
_ANY, _TYPE, _EXACT = 0, 1, 2


def _rating(ranges: list[tuple[str, float]], offer: str) -> tuple[float, int]:
    """The quality of ``offer`` from its most exact range (RFC 9110 12.5.1), and that exactness."""
    kind = offer.split("/", 1)[0]
    best: tuple[int, float] | None = None
    for media_range, quality in ranges:
        if media_range == offer:
            exactness = _EXACT
        elif media_range == f"{kind}/*":
            exactness = _TYPE
        elif media_range == "*/*":
            exactness = _ANY
        else:
            continue
        if best is None or exactness > best[0]:
            best = (exactness, quality)
    return (0.0, _ANY) if best is None else (best[1], best[0])


def prefers_html(accept: str | None) -> bool:
    """Whether ``accept`` (an ``Accept`` header) prefers ``text/html`` to ``application/json``."""
    if not accept or "text/" not in accept.lower():
        return False  # the common case, without parsing
    header = create_accept_header(accept)
    if not isinstance(header, AcceptValidHeader):
        return False
    ranges = [
        (media_range.split(";", 1)[0].strip().lower(), quality)
        for media_range, quality, _, _ in header.parsed
    ]
    html, html_exactness = _rating(ranges, "text/html")
    json, json_exactness = _rating(ranges, "application/json")
    if html <= 0:
        return False
    return html > json or (html == json and html_exactness > json_exactness)
