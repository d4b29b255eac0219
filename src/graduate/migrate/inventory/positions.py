"""How a libcst tree is written: the line each node starts on, as libcst's
`PositionProvider` has it, and its children in order, to walk it without rebuilding it.

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
from dataclasses import dataclass

import libcst as cst
from libcst._nodes.internal import CodegenState


@dataclass(frozen=True)
class Layout:
    """How a module is written, by identity of node: where each node starts, and each
    node's children in the order they are written, less whitespace and comments."""

    lines: dict[cst.CSTNode, int]
    children: dict[cst.CSTNode, list[cst.CSTNode]]


def layout(tree: cst.Module) -> Layout:
    """The layout of `tree`, from writing its code out once."""
    state = _StartLines(default_indent=tree.default_indent,
                        default_newline=tree.default_newline)
    tree._codegen(state)
    return Layout(state.starts, state.children)


def walk(node: cst.CSTNode, visitor: cst.CSTVisitor, written: Layout) -> None:
    """Visit `node` and what it holds with `visitor` as `node.visit(visitor)` does, in the
    same order, but for whitespace and comments, which are not visited at all (libcst
    visits the space after `as` before the name that follows it: its order is not the
    written one there). libcst's own visit rebuilds every node it passes, which a visitor
    that only reads has no use for: most of the cost of reading a file."""
    if visitor.on_visit(node):
        for child in written.children.get(node, ()):
            walk(child, visitor, written)
    visitor.on_leave(node)


class _StartLines(CodegenState):
    """A codegen state that follows the line being written and records where nodes
    start, by the same rules as libcst's `PositionProvidingCodegenState`."""

    def __init__(self, default_indent: str, default_newline: str) -> None:
        super().__init__(default_indent=default_indent, default_newline=default_newline)
        self.line = 1
        self.starts: dict[cst.CSTNode, int] = {}
        self.children: dict[cst.CSTNode, list[cst.CSTNode]] = {}
        self._opened: list[int] = []
        self._nodes: list[cst.CSTNode] = []

    def add_indent_tokens(self) -> None:
        super().add_indent_tokens()
        for token in self.indent_tokens:
            self.line += _newlines(token)

    def add_token(self, value: str) -> None:
        self.tokens.append(value)
        self.line += _newlines(value)

    def before_codegen(self, node: cst.CSTNode) -> None:
        if self._nodes and not isinstance(node, _LAYOUT_ONLY):
            self.children.setdefault(self._nodes[-1], []).append(node)
        self._nodes.append(node)
        self._opened.append(self.line)

    def after_codegen(self, node: cst.CSTNode) -> None:
        self._nodes.pop()
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


# Nodes that only lay code out: no reader looks at them.
_LAYOUT_ONLY = (cst.SimpleWhitespace, cst.ParenthesizedWhitespace, cst.TrailingWhitespace,
                cst.EmptyLine, cst.Comment, cst.Newline)


def _newlines(text: str) -> int:
    """How many line breaks `text` holds, counting "\\r\\n", "\\r" and "\\n" as one each
    (libcst's rule)."""
    if "\r" not in text:
        return text.count("\n")
    return text.count("\n") + text.count("\r") - text.count("\r\n")
