"""A notebook's code cell as the kernel runs it, for tests that read lessons' code without running it."""
from __future__ import annotations

import ast


def parse_cell(source: str) -> ast.Module:
    """The cell's syntax tree, with IPython's `!cmd`, `x = !cmd` and magics turned into plain Python first."""
    from IPython.core.inputtransformer2 import TransformerManager
    return ast.parse(TransformerManager().transform_cell(source))
