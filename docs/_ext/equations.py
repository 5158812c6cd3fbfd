"""Render the docstrings' equation blocks as math in the API reference (a griffe extension).

The docstrings write their equations once, in plain Unicode inside reStructuredText literal blocks
(a paragraph ending in ``::``), so that ``help()`` and an editor show them as they are. Here each
such block becomes a two-column table: the equations as MathML (converted from LaTeX at build time
by latex2mathml, so the pages need no JavaScript and no CDN), and the notes beside them as text.

A line is split into chunks at runs of two or more spaces. A chunk is an equation when it has an
``=`` and every word in it is a symbol (one letter with an optional subscript, ``W_ih``), a known
function (tanh, exp, log, max, LN, ...) or a Greek letter; anything else stays text. A block with
no equation at all (a shape legend, say) stays a code block. Doctest examples (``>>>``) are put in
``pycon`` code fences on the way.

A docstring paragraph that starts ``Equations: ``gatedrnn.equations.cells.NAME````` gets that
function's equation block inserted after it (``pull_equations``): the cells' file is at the
project's length limit, so their docstrings name the step whose equations they compute and the
site shows them, written once, in ``gatedrnn/equations/cells.py``.
"""

from __future__ import annotations

import html
import re
import unicodedata
import xml.etree.ElementTree as ET
from typing import Any

from griffe import Extension, Object
from latex2mathml.converter import convert

SYMBOLS = {"σ": r"\sigma", "φ": r"\varphi", "⊙": r"\odot", "−": "-", "·": r"\cdot", "…": r"\ldots",
           "≥": r"\geq", "≤": r"\leq", "×": r"\times", "√": r"\sqrt", "∈": r"\in", "|": r"\,|\,"}
FUNCTIONS = {"tanh": r"\tanh", "exp": r"\exp", "log": r"\log", "max": r"\max", "min": r"\min",
             "LN": r"\mathrm{LN}", "relu": r"\operatorname{relu}", "sqrt": r"\sqrt",
             "mean": r"\operatorname{mean}", "var": r"\operatorname{var}", "eps": r"\epsilon"}
PLAIN = set("+-*/=(),[]'.0123456789 ")
WORD = re.compile(r"([A-Za-z]+)(\u0303?)(?:_([A-Za-z0-9]+))?")
LEAD = re.compile(r"^([^=:]+:)\s+(\S.*=.*)$")  # "zoneout: h' = ..." -> ("zoneout:", "h' = ...")


def to_latex(chunk: str) -> str | None:
    """The LaTeX of one Unicode equation, or None when the chunk is not an equation."""
    text = unicodedata.normalize("NFD", chunk)  # ĩ -> i + combining tilde
    if "=" not in text:
        return None
    out, i = [], 0
    while i < len(text):
        match = WORD.match(text, i)
        if match:
            base, tilde, sub = match.groups()
            if base in FUNCTIONS:
                core = FUNCTIONS[base]
            elif len(base) == 1:
                core = rf"\tilde{{{base}}}" if tilde else base
            else:
                return None  # a word of prose: this chunk is text
            out.append(core + (f"_{{{sub}}}" if sub else "") + " ")
            i = match.end()
            continue
        ch = text[i]
        if ch in SYMBOLS:
            out.append(SYMBOLS[ch] + " ")
        elif ch in PLAIN:
            out.append(ch)
        else:
            return None
        i += 1
    return "".join(out).strip()


def _text(chunk: str) -> str:
    return html.escape(chunk.replace("``", "`").replace("`", ""))


def _math(latex: str) -> str:
    mathml = convert(latex)
    ET.fromstring(mathml)  # latex2mathml writes a few constructs as broken XML: refuse those
    return mathml


def _row(line: str) -> tuple[str, str] | None:
    """(math cell, note cell) of one line, or None when the line has no equation."""
    indent = "&emsp;" if line.startswith("  ") and not line.startswith("    ") else ""
    maths, notes = [], []
    line = re.sub(r"(\S)\s+=\s+", r"\1 = ", line.strip())  # "z  = σ(a_z)" is one chunk
    for chunk in re.split(r"\s{2,}", line):
        lead = LEAD.match(chunk)
        prefix, body = (lead.group(1), lead.group(2)) if lead else ("", chunk)
        latex = to_latex(body) if not notes else None  # after the first note, the rest is prose
        if latex is None:
            notes.append(chunk)
            continue
        maths.append((_text(prefix) + " " if prefix else "") + _math(latex))
    if not maths:
        return None
    return indent + " &ensp; ".join(maths), _text("  ".join(notes))


def block_to_html(lines: list[str]) -> str | None:
    """An HTML table for a literal block, or None to leave it a code block."""
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        return None
    width = min(len(ln) - len(ln.lstrip()) for ln in lines)
    rows = []
    for line in lines:
        line = line[width:]
        try:
            row = _row(line)
        except Exception:  # latex2mathml refused it: keep the line as text rather than fail the site
            row = None
        rows.append(row or ("", _text(line.strip())))
    if not any(math for math, _ in rows):
        return None
    body = "".join(f"<tr><td>{math}</td><td>{note}</td></tr>" for math, note in rows)
    return f'<table class="equations"><tbody>{body}</tbody></table>'


def convert_docstring(text: str) -> str:
    """Replace every ``::`` literal block whose lines hold equations by a table of MathML."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.rstrip().endswith("::"):
            out.append(line)
            i += 1
            continue
        base = len(line) - len(line.lstrip())
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        k = j
        while k < len(lines) and (not lines[k].strip() or len(lines[k]) - len(lines[k].lstrip()) > base):
            k += 1
        while k > j and not lines[k - 1].strip():
            k -= 1
        table = block_to_html(lines[j:k]) if k > j else None
        if table is None:
            out.append(line)
            i += 1
            continue
        head = line.rstrip()[:-2].rstrip()
        out.extend([head + ":" if head else "", "", " " * base + table, ""])
        i = k
    return "\n".join(out)


def fence_doctests(text: str) -> str:
    """Put each run of ``>>>`` examples (with their expected output) in a ``pycon`` code fence.

    Markdown would otherwise read ``>>>`` as three nested block quotes."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.lstrip().startswith(">>>"):
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        j = i
        while j < len(lines) and lines[j].strip() and lines[j].startswith(indent):
            j += 1
        out.extend([indent + "```pycon", *lines[i:j], indent + "```"])
        i = j
    return "\n".join(out)


PULL = re.compile(r"^Equations: ``gatedrnn\.equations\.cells\.(\w+)``", re.M)


def equation_block(name: str) -> list[str]:
    """The lines of the first ``::`` block of ``gatedrnn.equations.cells.<name>``'s docstring."""
    import inspect

    from gatedrnn.equations import cells

    lines = (inspect.getdoc(getattr(cells, name)) or "").split("\n")
    start = next(i for i, line in enumerate(lines) if line.rstrip().endswith("::")) + 1
    block: list[str] = []
    for line in lines[start:]:
        if line.strip() and not line.startswith(" "):
            break
        block.append(line)
    while block and not block[-1].strip():
        block.pop()
    return block


def pull_equations(text: str) -> str:
    """After each ``Equations: ``gatedrnn.equations.cells.NAME`` ...`` paragraph, that function's
    equation block (as a ``::`` literal block, which ``convert_docstring`` then renders)."""
    match = PULL.search(text)
    if match is None:
        return text
    end = text.find("\n\n", match.end())
    end = len(text) if end < 0 else end
    name = match.group(1)
    block = "\n".join(equation_block(name))
    return f"{text[:end]}\n\nThe step, from ``gatedrnn.equations.cells.{name}``::\n{block}{text[end:]}"


class UnicodeEquations(Extension):
    """Griffe hook: rewrite each object's docstring before mkdocstrings renders it."""

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is None:
            return
        text = pull_equations(obj.docstring.value)
        if "::" in text:
            text = convert_docstring(text)
        if ">>>" in text:
            text = fence_doctests(text)
        obj.docstring.value = text
