"""Boxes, columns and edges drawn as SVG with lxml, which escapes every name it is given.

Names come from hypervisors and may hold anything: lxml refuses characters XML cannot carry
(control characters), so `xml_text` replaces them before they reach it, and long names are
shortened on the box with the whole name kept in the box's tooltip (`<title>`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lxml import etree

SVG_NS = "http://www.w3.org/2000/svg"
LINE = 16  # height of one text row
PAD = 6  # inside a box, above the first row and below the last
GAP = 10  # between boxes of a column
CHAR = 7  # width of a character at the pictures' font size, roughly: how many fit on a box
TOP = 34  # room above the columns for their headings

# Characters XML 1.0 cannot hold (lxml raises on them rather than escape them)
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value) -> str:
    return _NOT_XML.sub("\ufffd", str(value))


def short(value, width: int) -> str:
    """`value` as it fits a row `width` pixels wide, cut with an ellipsis when too long."""
    text = xml_text(value)
    room = max(4, (width - 2 * PAD) // CHAR)
    return text if len(text) <= room else text[: room - 1] + "…"


@dataclass
class Row:
    """A text row of a box; with `href`, a link of its own drawn over the box (an SVG link
    cannot hold another link)."""

    text: str
    css: str = ""
    href: str = ""


@dataclass
class Box:
    key: str  # what edges name it by
    href: str
    rows: list[Row]
    css: str = ""
    title: str = ""  # the tooltip: the full name
    anchors: dict[str, int] = field(default_factory=dict)  # edge end → index of the row it meets
    x: int = 0
    y: int = 0
    width: int = 0

    @property
    def height(self) -> int:
        return 2 * PAD + LINE * len(self.rows)

    def anchor_y(self, anchor: str | None) -> float:
        index = self.anchors.get(anchor) if anchor else None
        if index is None:
            return self.y + PAD + LINE / 2  # the box's first row, its name
        return self.y + PAD + LINE * index + LINE / 2


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    source_anchor: str | None = None
    target_anchor: str | None = None
    css: str = ""


@dataclass
class Column:
    heading: str
    x: int
    width: int
    boxes: list[Box] = field(default_factory=list)

    def add(self, box: Box, at: int = 0) -> Box:
        """`box` below the column's last one, and not above `at` (to face what it joins)."""
        box.x, box.width = self.x, self.width
        box.y = max(at, self.next_y)
        self.boxes.append(box)
        return box

    @property
    def next_y(self) -> int:
        return self.bottom + GAP if self.boxes else TOP

    @property
    def bottom(self) -> int:
        return self.boxes[-1].y + self.boxes[-1].height if self.boxes else TOP


def render(boxes: list[Box], edges: list[Edge], label: str, css: str, headings: list[Column] = ()) -> str:
    """The picture as an `<svg>` element's markup, sized to what it holds; each column of
    `headings` gets its heading above it."""
    by_key = {box.key: box for box in boxes}
    width = max((box.x + box.width for box in boxes), default=0) + GAP
    height = max((box.y + box.height for box in boxes), default=TOP) + GAP
    root = etree.Element(
        f"{{{SVG_NS}}}svg",
        nsmap={None: SVG_NS},
        attrib={
            "class": f"topology {css}",
            "width": str(width),
            "height": str(height),
            "viewBox": f"0 0 {width} {height}",
            "role": "img",
        },
    )
    _sub(root, "title").text = xml_text(label)
    lines = _sub(root, "g", {"class": "edges"})
    for edge in edges:
        _edge(lines, by_key, edge)
    for column in headings:
        _text(root, column.x, TOP - 12, column.heading, "heading", column.width)
    for box in boxes:
        _box(root, box)
    return etree.tostring(root, encoding="unicode")


def _sub(parent, tag: str, attrib: dict | None = None):
    """A child in the SVG namespace (a plain tag would be written with an empty xmlns)."""
    return etree.SubElement(parent, f"{{{SVG_NS}}}{tag}", attrib or {})


def _edge(parent, boxes: dict[str, Box], edge: Edge) -> None:
    source, target = boxes.get(edge.source), boxes.get(edge.target)
    if source is None or target is None:
        return
    x1, y1 = source.x + source.width, source.anchor_y(edge.source_anchor)
    x2, y2 = target.x, target.anchor_y(edge.target_anchor)
    middle = (x1 + x2) / 2
    path = f"M{x1},{y1:.1f} C{middle},{y1:.1f} {middle},{y2:.1f} {x2},{y2:.1f}"
    # data-edge names both ends by key: what a test (or a script reading the picture) follows
    ends = xml_text(f"{source.key} {target.key}")
    attrib = {"d": path, "class": f"edge {edge.css}".strip(), "data-edge": ends}
    _sub(parent, "path", attrib)


def _box(parent, box: Box) -> None:
    css = f"box {box.css}".strip()
    attrib = {"class": css, "data-key": xml_text(box.key)}  # keys hold NIC and bridge names
    link = _sub(parent, "a", {"href": box.href, **attrib}) if box.href else _sub(parent, "g", attrib)
    _sub(link, "title").text = xml_text(box.title or box.rows[0].text)
    attrib = {"x": str(box.x), "y": str(box.y), "width": str(box.width), "height": str(box.height), "rx": "4"}
    _sub(link, "rect", attrib)
    for index, row in enumerate(box.rows):
        y = box.y + PAD + LINE * index + 12
        holder = link
        if row.href:
            holder = _sub(parent, "a", {"href": row.href, "class": "row-link"})
            _sub(holder, "title").text = xml_text(row.text)
        _text(holder, box.x + PAD, y, row.text, row.css or ("name" if index == 0 else ""), box.width)


def _text(parent, x: int, y: float, value: str, css: str, width: int) -> None:
    attrib = {"x": str(x), "y": f"{y:g}"}
    if css:
        attrib["class"] = css
    _sub(parent, "text", attrib).text = short(value, width)
