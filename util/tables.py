"""Tables as text: aligned columns for the terminal, rows for Markdown."""
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
