"""Every figure the README's results quote comes from a file the benchmark scripts wrote.

The scripts in ``benchmarks/`` (results, chrono, copy_defaults, compare_runs, speed, dispatch,
small_calls) write their tables to ``docs/results/*.md``; the documentation pages include those
files. This test reads the README's Results section, to the end of the file, and fails when a
number in it (in a table, or a decimal or percentage in the prose) appears in none of those files.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
# (the heading that starts a section, the heading that ends it, None for the end of the file)
SECTIONS: list[tuple[str, str | None]] = [("## Results", None)]
NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?:e-?\d+)?%?(?![\w])")


def section(text: str, start: str, end: str | None) -> str:
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip() == start)
    last = len(lines) if end is None else \
        next(i for i, line in enumerate(lines) if i > first and line.strip() == end)
    return "\n".join(lines[first + 1:last])


def quoted_numbers(text: str) -> set[str]:
    """Numbers in table rows, and decimals or percentages in the prose (counts such as "3
    layers" or "T = 100" are words of the sentence, not results). Code spans are commands and
    link targets addresses, so neither counts."""
    found = set()
    for line in text.splitlines():
        line = re.sub(r"`[^`]*`|\]\([^)]*\)", "", line)
        in_table = line.lstrip().startswith("|")
        for token in NUMBER.findall(line):
            if in_table or "." in token or token.endswith("%"):
                found.add(token)
    return found


def sources() -> str:
    return "\n".join(p.read_text() for p in sorted((ROOT / "docs" / "results").glob("*.md")))


def test_every_number_in_the_readme_results_is_in_a_results_file() -> None:
    readme = (ROOT / "README.md").read_text()
    source = sources()
    assert source, "docs/results/ holds no tables"
    for start, end in SECTIONS:
        missing = sorted(n for n in quoted_numbers(section(readme, start, end))
                         if not re.search(rf"(?<![\w.]){re.escape(n)}(?![\w])", source))
        assert not missing, f"README {start!r} quotes numbers no docs/results/*.md file holds: {missing}"


def test_the_check_catches_an_invented_number() -> None:
    text = "| LSTM | 99.9% | 12.3 |\nIt reached 0.00123 in 5 steps ([paper](https://arxiv.org/abs/1.5))."
    assert quoted_numbers(text) == {"99.9%", "12.3", "0.00123"}


def test_the_results_page_includes_every_results_file() -> None:
    page = (ROOT / "docs" / "results.md").read_text()
    for path in sorted((ROOT / "docs" / "results").glob("*.md")):
        assert f'--8<-- "docs/results/{path.name}"' in page, f"docs/results.md does not include {path.name}"
