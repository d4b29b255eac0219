"""The line each node of a libcst tree starts on, as libcst's `PositionProvider` has it.

The inventory needs only start lines. libcst's provider computes full ranges by writing
the module's code back out, and for every node builds two positions and a range, splits
each token with a regular expression and enters a generator-based context manager: most
of the cost of reading a file. This module writes the code out the same way (the same
`_codegen` of every node, so the same rule for where a node starts: after its leading
blank lines and comments, at its decorators' or first child's start where libcst says
so) but keeps one line number per node. `tests/migrate` checks it against
`PositionProvider` on every node of real-looking files.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import libcst as cst
from libcst._nodes.internal import CodegenState


def start_lines(tree: cst.Module) -> dict[cst.CSTNode, int]:
    """The line (from 1) each node of `tree` starts on, by identity of node."""
    state = _StartLines(default_indent=tree.default_indent,
                        default_newline=tree.default_newline)
    tree._codegen(state)
    return state.starts


class _StartLines(CodegenState):
    """A codegen state that follows the line being written and records where nodes
    start, by the same rules as libcst's `PositionProvidingCodegenState`."""

    def __init__(self, default_indent: str, default_newline: str) -> None:
        super().__init__(default_indent=default_indent, default_newline=default_newline)
        self.line = 1
        self.starts: dict[cst.CSTNode, int] = {}
        self._opened: list[int] = []

    def add_indent_tokens(self) -> None:
        super().add_indent_tokens()
        for token in self.indent_tokens:
            self.line += _newlines(token)

    def add_token(self, value: str) -> None:
        self.tokens.append(value)
        self.line += _newlines(value)

    def before_codegen(self, node: cst.CSTNode) -> None:
        self._opened.append(self.line)

    def after_codegen(self, node: cst.CSTNode) -> None:
        start = self._opened.pop()
        # A syntactic start recorded while the node was written wins over this one.
        self.starts.setdefault(node, start)

    @contextmanager
    def record_syntactic_position(self, node: cst.CSTNode, *,
                                  start_node: cst.CSTNode | None = None,
                                  end_node: cst.CSTNode | None = None) -> Iterator[None]:
        start = self.line
        try:
            yield
        finally:
            self.starts[node] = self.starts[start_node] if start_node is not None else start


def _newlines(text: str) -> int:
    """How many line breaks `text` holds, counting "\\r\\n", "\\r" and "\\n" as one each
    (libcst's rule)."""
    if "\r" not in text:
        return text.count("\n")
    return text.count("\n") + text.count("\r") - text.count("\r\n")
