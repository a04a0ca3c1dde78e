"""A page read back as its elements and text (the standard library's parser), for the checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    #: The text directly inside it (for ``<script>``: its code).
    text: str = ""

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


@dataclass
class Page:
    elements: list[Element] = field(default_factory=list)
    text: str = ""

    def find(self, tag: str, **attrs: str) -> list[Element]:
        """The elements ``tag`` with every attribute of ``attrs`` (``class_`` for a class)."""
        wanted = {k.rstrip("_"): v for k, v in attrs.items()}
        found = []
        for element in self.elements:
            if element.tag != tag:
                continue
            if "class" in wanted and wanted["class"] not in element.classes():
                continue
            if all(element.attrs.get(k) == v for k, v in wanted.items() if k != "class"):
                found.append(element)
        return found


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._open: list[Element] = []
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.page.elements.append(element)
        self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop().tag == tag:
                break

    def handle_data(self, data: str) -> None:
        self._text.append(data)
        if self._open:
            self._open[-1].text += data


def read(html: str) -> Page:
    """``html`` as its elements (in document order) and its text (entities decoded)."""
    reader = _Reader()
    reader.feed(html)
    reader.close()
    reader.page.text = "".join(reader._text)
    return reader.page
