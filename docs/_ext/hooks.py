"""MkDocs hook: turn the pages' LaTeX ($...$, $$...$$) into MathML when the site is built.

pymdownx.arithmatex (generic mode) marks the math; this hook converts it with latex2mathml, so the
site shows math with no JavaScript and fetches nothing. A formula latex2mathml cannot read fails
the build, naming the page.
"""

from __future__ import annotations

import html
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
