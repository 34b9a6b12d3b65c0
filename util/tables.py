"""Tables as text: aligned columns for the terminal, rows for Markdown. The one table renderer of
evaluate.py, reproduce.py and the benchmarks."""
from __future__ import annotations

from typing import Sequence


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns two spaces apart: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        lines.append("  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]))
    return "\n".join(lines)


def md_row(cells: Sequence[str]) -> str:
    """One Markdown table row; a '|' inside a cell is escaped."""
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def md_rule(columns: int) -> str:
    """The rule under a Markdown header row: the first column left-, the others right-aligned."""
    return md_row(["---"] + ["---:"] * (columns - 1))


def render_table(header: Sequence[str], rows: Sequence[Sequence], markdown: bool = False) -> str:
    """A whole table: aligned text (:func:`text_table`) or Markdown; cells converted with str."""
    header, rows = [str(c) for c in header], [[str(c) for c in r] for r in rows]
    if markdown:
        return "\n".join([md_row(header), md_rule(len(header)), *(md_row(r) for r in rows)])
    return text_table(header, rows)
