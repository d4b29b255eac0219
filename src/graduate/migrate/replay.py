"""The replay gate: would the code about to be deployed break the instances in flight?

Recorded workflow histories (fetched from a server by a visibility query, or exported
files) are replayed against the current workflow code with the SDK's replayer; a
history it cannot replay names an instance the deploy would break, and the event at
which it breaks. The engine-specific work is in `graduate.adapters.temporal.replay`.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar, cast
from xml.etree import ElementTree

from graduate._launch import die_with_parent
from graduate.errors import ConfigError, GraduateError
from graduate.flow import Flow
from graduate.services.model import TemporalTarget

# Replay the instances still in flight: the ones a deploy reaches.
IN_FLIGHT = 'ExecutionStatus="Running"'
# How long the replayer may go without a result (starting, or one history) before it
# is taken for stuck: a replay of one history takes a few seconds, most of them its
# start; this is room for a loaded machine and a long history.
REPLAY_SILENCE = 120.0

T = TypeVar("T")


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
        elif path.exists():  # /dev/null, a pipe, a socket: nothing a history is read from
            raise ConfigError(f"{path} is neither a history file (JSON, as a run exports it "
                              "or `temporal workflow show --output json` writes it) nor a "
                              "folder of them")
        else:
            raise ConfigError(f"no history file or folder {path}")
    return files


def replay_histories(target: str, flow: Flow, *, paths: Sequence[Path] = (),
                     server: TemporalTarget | None = None, query: str = IN_FLIGHT,
                     app: Mapping[str, str] | None = None,
                     silence: float = REPLAY_SILENCE) -> ReplayReport:
    """Replay the histories in `paths` (files or folders), or else those `query` lists on
    `server`, on the current code: graduate's workflow running `flow`, or the workflows
    of a team's app (`app`, its declared Temporal table).

    The SDK replays in a process of its own, stopped when it is `silence` seconds
    without a result: SDK core can panic in a thread on a history it does not expect and
    then never return, deaf to Ctrl-C; a process can always be killed."""
    files = history_files(paths) if paths else []
    if not files and server is None:
        raise ConfigError("give history files (exported by a run, or by `temporal workflow "
                          "show --output json`) or a Temporal server to query "
                          "(--temporal-address)")
    results = in_child(_replay, (flow, files, server, query, app), silence=silence,
                       what="the Temporal SDK's replayer")
    return ReplayReport(target, tuple(results))


def _replay(flow: Flow, files: list[Path], server: TemporalTarget | None, query: str,
            app: Mapping[str, str] | None, alive: Callable[[], None]) -> list[Replayed]:
    from graduate.adapters.temporal import replay as temporal

    async def run() -> list[Replayed]:
        workflows = temporal.workflows_for(flow, app=app)
        histories = (temporal.read_history_files(files, own_flow=app is None) if files else
                     await temporal.fetch_histories(server, query))  # type: ignore[arg-type]
        alive()
        return await temporal.replay(histories, workflows, on_result=lambda _: alive())

    return asyncio.run(run())


def in_child(call: Callable[..., T], args: tuple[Any, ...], *, silence: float,
             what: str) -> T:
    """`call(*args, alive)` in a process of its own, which calls `alive()` whenever it
    makes progress; killed when it is `silence` seconds without (or at Ctrl-C). What it
    raises is raised here; what it writes on stderr is kept for the message when it
    dies or stops answering."""
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    receive, send = context.Pipe(duplex=False)
    with tempfile.NamedTemporaryFile(prefix="graduate-child-", suffix=".log") as log:
        child = context.Process(target=_child, daemon=True,
                                args=(os.getpid(), send, log.name, call, args))
        child.start()
        send.close()
        answered = False
        try:
            while True:
                if not receive.poll(silence):
                    raise ConfigError(f"{what} gave no answer in {silence:g} s, and was "
                                      f"stopped{_said(log.name)}; a history it cannot read "
                                      "(edited, cut or of another workflow) does this: "
                                      "replay the files one by one to find it")
                try:
                    kind, value = receive.recv()
                except EOFError:
                    child.join()
                    raise ConfigError(f"{what} ended without an answer (exit code "
                                      f"{child.exitcode}){_said(log.name)}") from None
                if kind == "alive":
                    continue
                answered = True
                if kind == "error":
                    raise value
                return cast(T, value)
        finally:
            receive.close()
            # After an answer, a moment for its own end; else (stuck, Ctrl-C) none.
            child.join(timeout=5 if child.exitcode is None and answered else 0)
            if child.is_alive():
                child.kill()
                child.join()


def _child(parent: int, send: Connection, log: str, call: Callable[..., Any],
           args: tuple[Any, ...]) -> None:
    # A CLI killed with SIGKILL takes this child with it, stuck in the SDK or not.
    die_with_parent(parent)
    with open(log, "wb") as handle:  # SDK core writes its panics straight to fd 2
        os.dup2(handle.fileno(), 2)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it, and says why
    try:
        result = call(*args, lambda: send.send(("alive", None)))
    except GraduateError as error:
        send.send(("error", error))
    except Exception as error:  # the SDK's own assertion on a history, for one
        send.send(("error", ConfigError(f"{type(error).__name__}: {error}")))
    else:
        send.send(("ok", result))
    finally:
        send.close()


def _said(log: str) -> str:
    """The first line of what the child wrote about a panic or error, if any."""
    lines = [line.strip() for line in Path(log).read_text(errors="replace").splitlines()]
    said = next((line for i, line in enumerate(lines) if i and "panicked at" in lines[i - 1]),
                next((line for line in lines if line), ""))
    return f" (it said: {said[:300]})" if said else ""


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
