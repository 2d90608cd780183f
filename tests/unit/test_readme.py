"""The README and the other Markdown documents, rendered as GitHub renders them (cmark-gfm):
every table row written is a row of a rendered table, with all its cells.

The walkthroughs are run as written where they are set up: the quick start in
tests/system/test_make_run.py, nginx and HAProxy in tests/system/test_behind_proxies.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cmarkgfm
import pytest
from harness import ROOT
from lxml import html

DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
                    *(ROOT / "config" / "examples").glob("*/README.md")])
FENCE = re.compile(r"^\s*(```|~~~)")
DELIMITER_ROW = re.compile(r"^\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")


@dataclass(frozen=True)
class SourceRow:
    line: int
    cells: tuple[str, ...]


def cells_of(row: str) -> tuple[str, ...]:
    """A pipe-table row's cells as GFM reads them: split on every pipe not escaped, an
    escaped one (even in a code span) standing for a pipe."""
    inner = row.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return tuple(cell.strip().replace("\\|", "|")
                 for cell in re.split(r"(?<!\\)\|", inner))


def source_tables(text: str) -> list[list[SourceRow]]:
    """The pipe tables as written: runs of lines starting with a pipe, outside code
    blocks, without their delimiter rows."""
    tables: list[list[SourceRow]] = []
    in_code, previous_was_row = False, False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            in_code = not in_code
        is_row = not in_code and line.lstrip().startswith("|")
        if is_row and not DELIMITER_ROW.match(line.strip()):
            if not previous_was_row:
                tables.append([])
            tables[-1].append(SourceRow(number, cells_of(line)))
        previous_was_row = is_row
    return tables


def rendered_text(markdown: str) -> str:
    """What a reader sees of ``markdown``, whitespace folded."""
    rendered = cmarkgfm.github_flavored_markdown_to_html(markdown)
    return " ".join(html.fragment_fromstring(rendered, create_parent="div")
                    .text_content().split())


def rendered_tables(text: str) -> list[list[list[str]]]:
    page = html.fragment_fromstring(cmarkgfm.github_flavored_markdown_to_html(text),
                                    create_parent="div")
    return [[[" ".join(cell.text_content().split()) for cell in row.xpath("./th|./td")]
             for row in table.xpath(".//tr")] for table in page.xpath(".//table")]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_table_row_renders_as_a_row_with_all_its_cells(document: Path):
    text = document.read_text()
    written, rendered = source_tables(text), rendered_tables(text)
    name = document.relative_to(ROOT)
    for table in written:
        header = table[0]
        for row in table:
            # GFM drops the cells past the header's count: what they said would be lost
            assert len(row.cells) == len(header.cells), (
                f"{name}:{row.line}: {len(row.cells)} cells where the header has "
                f"{len(header.cells)} (an unescaped | ?)")
    shown = [cells for table in rendered for cells in table]
    rows = [row for table in written for row in table]
    for index, row in enumerate(rows):
        in_its_place = shown[index] if index < len(shown) else "nothing"
        assert in_its_place == [rendered_text(cell) for cell in row.cells], (
            f"{name}:{row.line}: written as a table row, rendered as text; in its place: "
            f"{in_its_place}")
    assert len(shown) == len(rows), f"{name}: {len(shown)} rows rendered, {len(rows)} written"


def test_a_table_broken_by_a_paragraph_is_caught():
    """The finding-code table once ended at a paragraph written between its rows: the rows
    after it rendered as text."""
    broken = ("| code | meaning |\n|---|---|\n| `expired` | past notAfter |\n\n"
              "A paragraph.\n\n| `revoked` | listed in a CRL |\n")
    written, rendered = source_tables(broken), rendered_tables(broken)
    assert [[row.cells[0] for row in table] for table in written] == [
        ["code", "`expired`"], ["`revoked`"]]
    assert rendered == [[["code", "meaning"], ["expired", "past notAfter"]]]
