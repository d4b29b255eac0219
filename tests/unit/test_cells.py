"""Matrix lanes in processes of their own: what a cell returns or raises reaches the
matrix as if it had run in the matrix's own process, and a lane's cells share what the
lane opened once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.lane_calls import opened, opened_by, parse, times

from graduate.chaos.cells import Cell, Lane, run_side_by_side
from graduate.errors import ConfigError


def test_each_lane_runs_its_cells_in_a_process_of_its_own(tmp_path: Path) -> None:
    done: dict[str, object] = {}
    lanes: list[Lane[object]] = [
        Lane("times", tuple(Cell(str(n), times, (n, 2)) for n in range(3)))]
    for n in range(2):
        lanes.append(Lane(f"lane{n}", tuple(Cell(f"pid{n}{k}", opened_by, ()) for k in range(2)),
                          opens=opened, open_args=(str(tmp_path / f"opened{n}"),)))

    run_side_by_side(lanes, at_once=2, folder=tmp_path,
                     on_done=lambda cell, value: done.update({cell.name: value}))

    assert {k: v for k, v in done.items() if not k.startswith("pid")} == {
        "0": 0, "1": 2, "2": 4}
    # Each lane's cells ran in its process, inside what it opened once; two processes.
    assert done["pid00"] == done["pid01"]
    assert done["pid10"] == done["pid11"]
    lane0, lane1 = done["pid00"], done["pid10"]
    assert isinstance(lane0, tuple)
    assert isinstance(lane1, tuple)
    pid0, opened0 = lane0
    pid1, opened1 = lane1
    assert len({pid0, pid1, os.getpid()}) == 3
    assert (opened0, opened1) == (str(pid0), str(pid1))
    assert not list(tmp_path.glob("*.outcome"))
    assert not list(tmp_path.glob("opened*")), "a lane left what it opened open"


def test_a_cell_that_raises_raises_its_own_error_in_the_matrix(tmp_path: Path) -> None:
    told: list[str] = []
    with pytest.raises(ConfigError, match="--time-scale 'soon' is not understood"):
        run_side_by_side([Lane("0", (Cell("0", parse, ("1h=1s",)),
                                     Cell("1", parse, ("soon",)),
                                     Cell("2", parse, ("3600",))))],
                         at_once=2, folder=tmp_path,
                         on_done=lambda cell, value: told.append(cell.name))
    assert told == ["0"]  # the cell before it was told; none after it ran
