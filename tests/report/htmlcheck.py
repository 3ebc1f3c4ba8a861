"""A small parse of a probity page with html.parser: elements in document order, with their
attributes and text, so tests can ask what comes first, which cells are aligned how, and
which headings are empty."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {"meta", "img", "br", "hr", "link", "input", "col", "path", "use", "rect", "circle", "line"}
NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?( \[[^\]]+\])?$")


@dataclass
class Element:
    tag: str
    attrs: dict
    index: int  # position in document order
    text: str = ""
    parents: list[str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())


class _Parser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.stack: list[Element] = []

    def handle_starttag(self, tag, attrs):
        el = Element(tag, dict(attrs), len(self.elements), parents=[e.tag for e in self.stack])
        self.elements.append(el)
        if tag not in VOID:
            self.stack.append(el)

    def handle_startendtag(self, tag, attrs):
        self.elements.append(Element(tag, dict(attrs), len(self.elements), parents=[e.tag for e in self.stack]))

    def handle_endtag(self, tag):
        for k in range(len(self.stack) - 1, -1, -1):
            if self.stack[k].tag == tag:
                del self.stack[k:]
                break

    def handle_data(self, data):
        for el in self.stack:
            el.text += data


def parse(html: str) -> list[Element]:
    """Every element of ``html`` in document order (text includes the text of descendants)."""
    p = _Parser()
    p.feed(html)
    p.close()
    return p.elements


def body_elements(elements: list[Element]) -> list[Element]:
    """Elements inside <body> that are not inside an inline <svg> figure."""
    return [e for e in elements if "body" in e.parents and "svg" not in e.parents and e.tag != "svg"]


def is_number(text: str) -> bool:
    """A cell that shows a number (optionally with an interval ``[lo, hi]``)."""
    text = text.strip()
    return text not in ("", "–") and NUMBER.match(text) is not None
