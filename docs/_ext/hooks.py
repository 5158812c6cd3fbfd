"""MkDocs hooks: the pages' LaTeX as MathML, and the engines page's table read from the code.

- pymdownx.arithmatex (generic mode) marks the math ($...$, $$...$$); ``on_page_content`` converts
  it with latex2mathml, so the site shows math with no JavaScript and fetches nothing. A formula
  latex2mathml cannot read fails the build, naming the page.
- A page line ``<!-- dispatch-table: ... -->`` becomes ``gatedrnn.engines.dispatch.TABLE`` as a
  Markdown table (``on_page_markdown``), one column per field of ``dispatch.Row`` read with
  ``dataclasses.fields``, so a new field or row shows up without an edit here and the page cannot
  drift from the code.
"""

from __future__ import annotations

import dataclasses
import html
import inspect
import re
import xml.etree.ElementTree as ET
from typing import Any

from latex2mathml.converter import convert

INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)


def _mathml(latex: str, display: str, where: str) -> str:
    try:
        mathml = convert(html.unescape(latex).strip(), display=display)
        # latex2mathml writes some constructs it does not know (``aligned``'s &) as broken XML.
        ET.fromstring(mathml)
    except Exception as err:  # latex2mathml raises its own classes, one per kind of mistake
        raise ValueError(f"{where}: cannot convert the formula {latex!r}: {err!r}") from err
    return mathml


def on_page_content(content: str, page: Any, **kwargs: Any) -> str:
    where = page.file.src_path
    content = BLOCK.sub(lambda m: f'<div class="math">{_mathml(m.group(1), "block", where)}</div>',
                        content)
    return INLINE.sub(lambda m: _mathml(m.group(1), "inline", where), content)


TABLE_MARK = re.compile(r"^<!-- dispatch-table:.*?-->$", re.M)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return ", ".join(_cell(v) for v in value)
    return str(value).replace("|", "\\|")


def dispatch_table() -> str:
    """``dispatch.TABLE`` as Markdown: the row number, then one column per field of ``Row`` that
    some row sets (a blank cell: the field's default, which for the features is "any")."""
    from gatedrnn.engines import dispatch

    fields = dataclasses.fields(dispatch.Row)

    def default(f: dataclasses.Field) -> Any:
        if f.default is not dataclasses.MISSING:
            return f.default
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return dataclasses.MISSING  # required (the engine): always shown

    shown = [f for f in fields if any(getattr(r, f.name) != default(f) for r in dispatch.TABLE)]
    unset = [f.name for f in fields if f not in shown]
    lines = ["| # | " + " | ".join(f"`{f.name}`" for f in shown) + " |",
             "|---:|" + "---|" * len(shown)]
    for number, row in enumerate(dispatch.TABLE, 1):
        cells = []
        for f in shown:
            value = getattr(row, f.name)
            text = "" if value == default(f) else _cell(value)
            cells.append(f"`{text}`" if f.name == "engine" else text)
        lines.append(f"| {number} | " + " | ".join(cells) + " |")
    if unset:
        lines += ["", "Fields no row sets (any call matches them): "
                  + ", ".join(f"`{n}`" for n in unset) + "."]
    # What each field means: the comment beside it in Row's source, where it has one.
    notes = dict(re.findall(r"^\s+(\w+):[^#\n]*#\s*(.+)$", inspect.getsource(dispatch.Row), re.M))
    described = [(f.name, notes[f.name]) for f in fields if f.name in notes]
    if described:
        lines += ["", "The fields (the comments of `Row`):", ""]
        lines += [f"- `{n}`: {html.escape(note, quote=False)}" for n, note in described]
    machines = getattr(dispatch, "MACHINES", None)
    if isinstance(machines, dict):
        used = {getattr(r, "measured_on", None) for r in dispatch.TABLE}
        lines += ["", "The machines (`MACHINES`):", ""]
        lines += [f"- `{k}`: {html.escape(str(v), quote=False)}" for k, v in machines.items() if k in used]
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if TABLE_MARK.search(markdown):
        markdown = TABLE_MARK.sub(lambda m: dispatch_table(), markdown)
    return markdown
