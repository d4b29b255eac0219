"""Matrix cells in processes of their own: what a cell returns or raises reaches the
matrix as if it had run in the matrix's own process."""

from __future__ import annotations

import operator
import os
from pathlib import Path

import pytest

from graduate.chaos.cells import Cell, run_side_by_side
from graduate.errors import ConfigError
from graduate.timescale import TimeScale


def test_each_cell_returns_from_a_process_of_its_own(tmp_path: Path) -> None:
    done: dict[str, object] = {}
    cells = [*(Cell(str(n), operator.mul, (n, 2)) for n in range(3)),
             *(Cell(f"pid{n}", os.getpid, ()) for n in range(2))]

    run_side_by_side(cells, at_once=2, folder=tmp_path,
                     on_done=lambda cell, value: done.update({cell.name: value}))

    assert {k: v for k, v in done.items() if not k.startswith("pid")} == {
        "0": 0, "1": 2, "2": 4}
    assert len({done["pid0"], done["pid1"], os.getpid()}) == 3
    assert not list(tmp_path.glob("*.outcome"))


def test_a_cell_that_raises_raises_its_own_error_in_the_matrix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--time-scale 'soon' is not understood"):
        run_side_by_side([Cell("0", TimeScale.parse, ("soon",))], at_once=2,
                         folder=tmp_path, on_done=lambda cell, value: None)
