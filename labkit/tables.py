"""Tables as plain text through rich: the same in a terminal, a notebook's output and a test's assertion."""
from __future__ import annotations

import io
from typing import Iterable, Sequence

from rich import box
from rich.console import Console
from rich.table import Table

MARK = {True: "✔", False: "✘", None: "·"}  # passed, failed, informational
KNOWN = "≠"  # failed by the server's design (a known difference, its reason beside it), not a bug


def table(columns: Sequence[str], rows: Iterable[Sequence[object]], *, right: Sequence[str] = (),
          title: str | None = None) -> Table:
    """A rich Table: `columns` by name, those in `right` right-aligned (numbers), every cell as str."""
    t = Table(*columns, title=title, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for col in t.columns:
        col.justify = "right" if col.header in right else "left"
        col.overflow = "fold"
    for row in rows:
        t.add_row(*("" if cell is None else str(cell) for cell in row))
    return t


def render(*renderables: object, width: int = 140) -> str:
    """Render rich objects to plain text (no colour codes), trailing spaces removed."""
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, force_terminal=False, force_jupyter=False,
                      highlight=False)
    for r in renderables:
        console.print(r)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())
