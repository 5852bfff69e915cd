"""A small HTML writer for self-contained reports: escaped text, tables, embedded PNG images.

A page holds its CSS inline, its images as ``data:image/png;base64`` URIs and no script and no
external address, so the one file can be mailed, archived or opened offline.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto;
       max-width: 1180px; padding: 0 24px 48px; color: #1d1d1f; line-height: 1.45; }
header { border-bottom: 1px solid #ddd; margin-bottom: 8px; }
h1 { font-size: 1.6em; margin: 24px 0 4px; }
h2 { font-size: 1.25em; margin: 32px 0 8px; border-bottom: 1px solid #eee; padding-bottom: 4px; }
h3 { font-size: 1.05em; margin: 20px 0 6px; }
h4, h5, h6 { font-size: 0.98em; margin: 14px 0 4px; }
nav a { margin-right: 14px; color: #0b5cad; text-decoration: none; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 4px 10px; }
th { background: #f5f5f7; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
details summary { cursor: pointer; color: #0b5cad; }
pre { background: #f7f7f9; border: 1px solid #e5e5e5; padding: 10px 12px; overflow-x: auto;
      font-size: 0.85em; }
figure { margin: 10px 0 22px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, p.note { color: #555; font-size: 0.9em; }
.muted { color: #777; }
"""


def escape(text: object) -> str:
    """``text`` as HTML text (``<``, ``&`` and quotes escaped)."""
    return html.escape(str(text), quote=True)


def format_value(value: Any) -> str:
    """A number or value as short text: 4 decimals, integers with thousands separators."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.4g}"
        if value.is_integer() and abs(value) >= 1000:
            return f"{int(value):,}"
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    return str(value)


def is_number(value: Any) -> bool:
    """True for ints and floats (not bools)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], raw: bool = False) -> str:
    """An HTML table; cells are formatted with :func:`format_value` and escaped.

    With ``raw`` the cells (and header) are inserted as given: already escaped HTML, every
    column after the first right-aligned (numbers).
    """
    head = "".join(f"<th>{h if raw else escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for index, cell in enumerate(row):
            numeric = index > 0 if raw else is_number(cell)
            text = cell if raw else escape(format_value(cell))
            cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def png_image(png: bytes, alt: str, caption: str | None = None) -> str:
    """A figure embedding ``png`` as a data URI, with alt text and an optional caption."""
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("png_image: the bytes are not a PNG file")
    data = base64.b64encode(png).decode("ascii")
    caption_html = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    img = f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'
    return f"<figure>{img}{caption_html}</figure>"


def note(text: str) -> str:
    """A muted paragraph."""
    return f'<p class="note">{escape(text)}</p>'


def section(ident: str, title: str, body: str) -> str:
    """``<section id=ident>`` with an ``<h2>`` title."""
    return f'<section id="{escape(ident)}"><h2>{escape(title)}</h2>{body}</section>'


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping's leaves under dotted keys: ``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def nested_tables(data: Mapping[str, Any], title: str | None = None, level: int = 3) -> str:
    """Any nested mapping of values as tables.

    The scalar (non-mapping) entries form one key / value table. The mapping entries form one
    table — a row per entry, a column per (dotted) key, "–" where an entry lacks one — when they
    are rows of one kind: each holds scalars or mappings of scalars, and all share at least one
    key (``{task: {metric: value}}``). Otherwise each gets its own tables, under a heading.
    """
    parts = [f"<h{level}>{escape(title)}</h{level}>"] if title else []
    scalars = [(k, v) for k, v in data.items() if not isinstance(v, Mapping)]
    nested = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    if scalars:
        parts.append(table(["", "value"], [[k, v] for k, v in scalars]))
    rows = {k: flatten(v) for k, v in nested.items()}
    shared = set.intersection(*(set(v) for v in rows.values())) if rows else set()
    if shared and all(_two_level(v) for v in nested.values()):
        columns: list[str] = []
        for values in rows.values():
            columns += [c for c in values if c not in columns]
        parts.append(
            table(["", *columns], [[k, *(v.get(c) for c in columns)] for k, v in rows.items()])
        )
    else:
        for key, value in nested.items():
            parts.append(nested_tables(value, str(key), min(level + 1, 6)))
    return "".join(parts)


def _two_level(value: Mapping[str, Any]) -> bool:
    """True when ``value``'s entries are scalars or mappings of scalars (fits one table row)."""
    return all(
        not isinstance(v, Mapping) or not any(isinstance(w, Mapping) for w in v.values())
        for v in value.values()
    )


def page(title: str, subtitle: str, nav: Sequence[tuple[str, str]], sections: Sequence[str]) -> str:
    """A whole HTML document: inline CSS, a header with links to the sections, the sections."""
    links = "".join(f'<a href="#{escape(i)}">{escape(t)}</a>' for i, t in nav)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{escape(title)}</h1><p class="muted">{escape(subtitle)}</p>'
        f"<nav>{links}</nav></header>" + "".join(sections) + "</body></html>\n"
    )
