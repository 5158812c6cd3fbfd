"""Every measured figure on every page comes from the results file it cites.

The scripts in ``benchmarks/`` (results, chrono, copy_defaults, compare_runs, speed, dispatch,
small_calls) and ``gatedrnn compare`` write their tables to ``docs/results/*.md``; those files are
the sources, and this test reads every other Markdown page under ``docs/`` and the README.

The rules:

- **Blocks and sections.** A page is cut into blocks: a paragraph, one item of a list, a table, a
  snippet include (``--8<-- "docs/results/NAME.md"``). A heading (any level) starts a section.
  Fenced code, ``$$`` math, HTML comments, and in a block its code spans, inline ``$`` math,
  images and link targets are not text and hold no numbers (commands, code, equations, URLs).
- **What cites a file.** A Markdown link to ``docs/results/NAME.md`` (relative to the page), a
  snippet include of it, or a link to an anchor of ``docs/results.md``, which cites every file
  included under that heading. A link to ``results.md`` without an anchor cites nothing. A block
  cites what it links to itself, or, when it introduces an include (the next block is one), that
  include. Its sources are what it cites and what the nearest earlier citing block of its section
  cites (a paragraph that discusses a table may add a second file to it).
- **A results context** is a block that has sources, or that names a run (a ``benchmarks/*.py``
  script, ``gatedrnn compare`` or ``gatedrnn bench``), or the table right after such a block.
  Numbers only need a source in a results context; elsewhere (shapes, hyper-parameters, years,
  estimates on paper, the pages that explain a design) they are text. ``gatedrnn train`` alone
  does not make one: the toolkit's pages name it beside its settings.
- **What counts as a number there.** In a table, every number of the body rows (the header row
  names the columns). In prose, a decimal (``0.56``, ``9.1e-05``), a percentage (``98.6%``), a
  ratio (``2.73×``, ``3×``; not a shape ``32 × 128``) and a time in ``ms`` or ``µs``; an integer
  alone is a count, a shape, a step or a year, and is text. A setting is not a result either: a
  number right after ``=`` or after the name of an option (``dropout 0.25``, ``lr 0.005``).
- **The check.** Each such number appears in one of the block's sources as a whole number: the
  same digits, with no more and no fewer decimals (``1.9`` is not ``1.91``); a ``%`` or ``×`` sign
  is not compared. A results context that names a run but cites no file fails too.

A failure names the page, the line, the number and the file(s) it was looked up in. A page's own
Markdown is read: the contributor pages include ARCHITECTURE.md and CONTRIBUTING.md, notes for
developers, which are not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
RESULTS = DOCS / "results"
DIGITS = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e-?\d+)?"  # 4,417  0.56  9.1e-05
NUMBER = re.compile(rf"(?<![\w.,]){DIGITS}%?(?![\w]|[.,]\d)")
INCLUDE = re.compile(r'^\s*--8<--\s+"([^"]+)"\s*$')
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)[^)]*\)")
RUN = re.compile(r"benchmarks/\w+\.py|gatedrnn (?:compare|bench)\b")
# a setting, not a result: a number right after "=" or after the name of an option
SETTING = re.compile(r"(?:=|\b(?:dropout|zoneout|drop|lr|Adam|rate|temperature|bias|clipping|"
                     r"p))\s*$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LIST_ITEM = re.compile(r"^\s{0,3}(?:[-*+]|\d+\.)\s")
# what a prose number needs around it to be a measurement
PROSE = re.compile(rf"(?<![\w.,])({DIGITS})(%|\s?×(?!\s*\d)|\s?(?:ms|µs)\b)?(?![\w]|[.,]\d)")


@dataclass
class Block:
    kind: str  # "text", "table", "include"
    line: int  # 1-based line of its first line
    lines: list[str] = field(default_factory=list)
    section: int = 0
    include: str | None = None  # the include's path, relative to the repository


def slugify(text: str) -> str:
    """Python-Markdown's toc anchor of a heading (the links' ``#fragment``)."""
    text = re.sub(r"`|\*\*|\*|_(?=\W)", "", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\s-]", "", text.encode("ascii", "ignore").decode()).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def blocks(text: str) -> list[Block]:
    """The page cut into blocks; fenced code, ``$$`` math and comments dropped."""
    text = re.sub(r"<!--.*?-->", lambda m: "\n" * m.group().count("\n"), text, flags=re.S)
    out: list[Block] = []
    section, fence, current = 0, "", None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if fence:
            if stripped.startswith(fence):
                fence = ""
            continue
        if stripped.startswith(("```", "~~~", "$$")):
            fence = stripped[:3] if not stripped.startswith("$$") or stripped == "$$" else ""
            if stripped.startswith("$$") and stripped.endswith("$$") and len(stripped) > 2:
                fence = ""
            current = None
            continue
        if not stripped:
            current = None
            continue
        if HEADING.match(line):
            section += 1
            current = None
            continue
        include = INCLUDE.match(line)
        kind = "include" if include else "table" if stripped.startswith("|") else "text"
        new_item = kind == "text" and LIST_ITEM.match(line) is not None
        if current is None or current.kind != kind or kind == "include" or new_item:
            current = Block(kind, number, section=section,
                            include=include.group(1) if include else None)
            out.append(current)
        current.lines.append(line)
    return out


def results_anchors() -> dict[str, set[str]]:
    """Anchor of each heading of docs/results.md -> the results files included under it."""
    anchors: dict[str, set[str]] = {}
    stack: list[tuple[int, str]] = []
    for line in (DOCS / "results.md").read_text(encoding="utf-8").splitlines():
        heading = HEADING.match(line)
        if heading:
            level = len(heading.group(1))
            stack = [(lv, a) for lv, a in stack if lv < level] + [(level, slugify(heading.group(2)))]
            anchors.setdefault(stack[-1][1], set())
            continue
        include = INCLUDE.match(line)
        if include and include.group(1).startswith("docs/results/"):
            for _, anchor in stack:
                anchors[anchor].add(include.group(1))
    return anchors


def cited(block: Block, page: Path, anchors: dict[str, set[str]]) -> set[str]:
    """The results files (``docs/results/NAME.md``) a block cites itself."""
    if block.kind == "include":
        path = block.include or ""
        return {path} if path.startswith("docs/results/") else set()
    files = set()
    for _, target in LINK.findall("\n".join(block.lines)):
        path, _, anchor = target.partition("#")
        if re.match(r"\w+:", path):
            continue
        resolved, root = (page.parent / path).resolve() if path else page.resolve(), ROOT.resolve()
        rel = resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else ""
        if rel.startswith("docs/results/") and rel.endswith(".md"):
            files.add(rel)
        elif rel == "docs/results.md" and anchor:
            files |= anchors.get(anchor, set())
    return files


def _prose(line: str) -> str:
    line = re.sub(r"``.*?``|`[^`]*`", " ", line)
    line = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", line)
    line = re.sub(r"\]\([^)]*\)", "]", line)
    return re.sub(r"(?<!\\)\$[^$]+\$", " ", line)


def numbers(block: Block) -> list[tuple[int, str]]:
    """(line, number) of each number that needs a source, by the rules above."""
    found = []
    if block.kind == "table":
        for offset, line in enumerate(block.lines):
            if offset == 0 or re.fullmatch(r"[\s|:\-]+", line):
                continue  # the header row and the alignment row
            found += [(block.line + offset, n) for n in NUMBER.findall(_prose(line))]
    elif block.kind == "text":
        for offset, line in enumerate(block.lines):
            text = _prose(line)
            for match in PROSE.finditer(text):
                value, mark = match.group(1), match.group(2) or ""
                if (mark or "." in value) and not SETTING.search(text[:match.start()]):
                    found.append((block.line + offset, value + mark))
    return found


def tokens(path: str) -> set[str]:
    text = (ROOT / path).read_text(encoding="utf-8")
    return {t.rstrip("%") for t in NUMBER.findall(text)}


def problems(page: Path, text: str | None = None) -> list[str]:
    """Every number of ``page`` in a results context that its sources do not hold."""
    text = page.read_text(encoding="utf-8") if text is None else text
    anchors = results_anchors()
    name = page.relative_to(ROOT).as_posix() if page.is_relative_to(ROOT) else page.name
    out: list[str] = []
    found = blocks(text)
    sources: set[str] = set()
    section, run = -1, False
    for i, block in enumerate(found):
        if block.section != section:
            section, sources, run = block.section, set(), False
        following = found[i + 1] if i + 1 < len(found) and found[i + 1].section == section else None
        own = cited(block, page, anchors)
        if not own and following is not None and following.kind == "include":
            own = cited(following, page, anchors)
        checked, sources = own | sources, own or sources
        # a block that names a run puts itself and the table it introduces in a results context
        names_run = bool(RUN.search("\n".join(block.lines)))
        in_run = names_run or (block.kind == "table" and run)
        run = names_run
        if not (checked or in_run):
            continue
        quoted = numbers(block)
        if quoted and not checked:
            out.append(f"{name}:{block.line}: names a run but cites no docs/results file "
                       f"for {[n for _, n in quoted]}")
            continue
        held = set().union(*(tokens(s) for s in checked))
        for line, value in quoted:
            bare = value.rstrip("%×").rstrip().removesuffix("ms").removesuffix("µs").strip()
            if bare not in held:
                out.append(f"{name}:{line}: {value} is not in {', '.join(sorted(checked))}")
    return out


def pages() -> list[Path]:
    found = [p for p in sorted(DOCS.rglob("*.md")) if RESULTS not in p.parents]
    return [ROOT / "README.md", *found]


def test_every_page_is_checked() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in pages()}
    assert {"README.md", "docs/results.md", "docs/newer-cells.md", "docs/engines.md",
            "docs/api/modules.md"} <= names
    assert not any(n.startswith("docs/results/") for n in names)


def test_every_number_in_a_results_context_is_in_the_file_it_cites() -> None:
    assert list(RESULTS.glob("*.md")), "docs/results/ holds no tables"
    found = [p for page in pages() for p in problems(page)]
    assert not found, "numbers without a source:\n" + "\n".join(found)


def test_the_check_catches_an_invented_number(tmp_path: Path) -> None:
    page = DOCS / "example.md"  # never written: the text is given
    # three figures the file holds (a rerun of its benchmark changes them): a time and two ratios
    table = (RESULTS / "speed-newer-cells.md").read_text(encoding="utf-8")
    ms = re.search(r"\| LSTM \| ([\d.]+) \|", table).group(1)
    r1, r2 = re.findall(r"/ MinGRU fused \| ([\d.]+) \|", table)[:2]
    assert "481.7" not in table and "2.9" not in table.split() and "4.9" not in table.split()
    text = (f"# A\n\nMeasured in [the file](results/speed-newer-cells.md): {ms} ms and {r1}×.\n\n"
            "| cell | ms |\n|---|---|\n| LSTM | 481.7 |\n\n"
            "Then 2.9× faster, `python benchmarks/speed.py --repeats 3` (100, 64, 512, 512).\n\n"
            "# B\n\nThe GRU reached 98.6% (`python benchmarks/results.py --rows japanese-vowels`).\n\n"
            "# C\n\nA forget gate near σ(0) = 0.5 and 12.5% chance, with no run named.\n\n"
            f"See [speed](results.md#the-newer-cells-and-head-wise-recurrence): {r2}× and 4.9×,\n"
            "dropout 0.25, σ(0) = 0.5, a (32 × 128) product.\n")
    found = problems(page, text)
    assert any(":7: 481.7 is not in docs/results/speed-newer-cells.md" in p for p in found), found
    assert any(":9: 2.9× is not in" in p for p in found), found
    assert any(":13: names a run but cites no docs/results file" in p for p in found), found
    assert any(":19: 4.9× is not in docs/results/speed-newer-cells.md" in p for p in found), found
    assert len(found) == 4, found  # ms, r1, r2 are in the file; 0.5, 0.25, 32 are not results


def test_the_results_page_includes_every_results_file() -> None:
    page = (DOCS / "results.md").read_text(encoding="utf-8")
    for path in sorted(RESULTS.glob("*.md")):
        assert f'--8<-- "docs/results/{path.name}"' in page, f"docs/results.md does not include {path.name}"
