"""The replay gate: would the code about to be deployed break the instances in flight?

Recorded workflow histories (fetched from a server by a visibility query, or exported
files) are replayed against the current workflow code with the SDK's replayer; a
history it cannot replay names an instance the deploy would break, and the event at
which it breaks. The engine-specific work is in `graduate.adapters.temporal.replay`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from graduate.errors import ConfigError
from graduate.flow import Flow
from graduate.services.model import TemporalTarget

# Replay the instances still in flight: the ones a deploy reaches.
IN_FLIGHT = 'ExecutionStatus="Running"'


@dataclass(frozen=True)
class Replayed:
    """One recorded history replayed on the current code."""

    instance_id: str  # the workflow ID
    run_id: str
    running: bool  # the history is of an instance still in flight
    broken: bool = False
    event_id: int | None = None  # the history event the new code does not match
    reason: str = ""  # the replayer's error (a non-determinism error)

    def describe(self) -> str:
        if not self.broken:
            return f"{self.instance_id}: replays on the new code"
        at = f" at event {self.event_id}" if self.event_id is not None else ""
        return f"{self.instance_id}: breaks{at}: {self.reason}"


@dataclass(frozen=True)
class ReplayReport:
    """What the gate found, for `target` (a flow or an app)."""

    target: str
    results: tuple[Replayed, ...]

    @property
    def broken(self) -> tuple[Replayed, ...]:
        return tuple(r for r in self.results if r.broken)


def history_files(paths: Sequence[Path]) -> list[Path]:
    """The JSON files among `paths` (a folder gives its `*.json`, recursively)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.rglob("*.json"))
            if not found:
                raise ConfigError(f"{path} holds no history file (*.json)")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"no history file or folder {path}")
    return files


def replay_histories(target: str, flow: Flow, *, paths: Sequence[Path] = (),
                     server: TemporalTarget | None = None, query: str = IN_FLIGHT,
                     app: Mapping[str, str] | None = None) -> ReplayReport:
    """Replay the histories in `paths` (files or folders), or else those `query` lists on
    `server`, on the current code: graduate's workflow running `flow`, or the workflows
    of a team's app (`app`, its declared Temporal table)."""
    from graduate.adapters.temporal import replay as temporal

    files = history_files(paths) if paths else []
    if not files and server is None:
        raise ConfigError("give history files (exported by a run, or by `temporal workflow "
                          "show --output json`) or a Temporal server to query "
                          "(--temporal-address)")

    async def run() -> list[Replayed]:
        workflows = temporal.workflows_for(flow, app=app)
        histories = (temporal.read_history_files(files) if files else
                     await temporal.fetch_histories(server, query))  # type: ignore[arg-type]
        return await temporal.replay(histories, workflows)

    return ReplayReport(target, tuple(asyncio.run(run())))


def to_junit(report: ReplayReport) -> str:
    """One test case per replayed history; a broken one is a failure."""
    suite = ElementTree.Element("testsuite", name=f"graduate replay {report.target}",
                                tests=str(len(report.results)),
                                failures=str(len(report.broken)))
    for result in report.results:
        case = ElementTree.SubElement(suite, "testcase", classname=f"replay.{report.target}",
                                      name=f"{result.instance_id} ({result.run_id})")
        if result.broken:
            failure = ElementTree.SubElement(case, "failure", message=result.describe())
            failure.text = result.reason
    return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True)
