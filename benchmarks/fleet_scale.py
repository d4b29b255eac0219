"""How many registered workers and instances one harness drives (docs/deployment.md).

Starts WORKERS `graduate worker` processes for one engine, each in a network namespace
of its own when this runs as root with `ip` (else each in its own process group), all
sharing only PostgreSQL, the broker and the Temporal server; then runs `graduate chaos
--workers external` under kill-worker with each count of instances, and records how long
the workers took to register, how long each fault command took from issue to done, the
run's wall time and its verdicts. The services are the ones the GRADUATE_* variables
name (the harness's view); in namespaces, workers reach them through a bridge and one
TCP forwarder per service on this host.

    GRADUATE_LEDGER_URL=postgresql://... GRADUATE_TEMPORAL_ADDRESS=127.0.0.1:7233 \\
    GRADUATE_BROKER_URL=redis://127.0.0.1:6379/0 \\
    python benchmarks/fleet_scale.py --engine temporal --workers 2,4,8 --instances 10,50

Every process and namespace it creates is removed at the end, on error too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import graduate
from graduate.config import Settings, load_settings
from graduate.evidence import EvidenceStore
from graduate.fleet import FleetLedger

BRIDGE, SUBNET = "gxbr0", "10.231.0"
HOST_IP = f"{SUBNET}.1"
FLOW = Path(__file__).resolve().parents[1] / "tests" / "flows" / "approval.toml"


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def namespaces_available() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("socat") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], check=False).returncode == 0


@contextlib.contextmanager
def bridge(ports: list[int]) -> Iterator[list[subprocess.Popen[bytes]]]:
    """A bridge on this host, and a TCP forwarder from its address to each service."""
    run("ip", "link", "add", BRIDGE, "type", "bridge")
    forwarders: list[subprocess.Popen[bytes]] = []
    try:
        run("ip", "addr", "add", f"{HOST_IP}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        for port in ports:
            forwarders.append(subprocess.Popen(
                ["socat", f"TCP-LISTEN:{port},bind={HOST_IP},fork,reuseaddr",
                 f"TCP:127.0.0.1:{port}"], start_new_session=True))
        yield forwarders
    finally:
        for forwarder in forwarders:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(forwarder.pid, signal.SIGKILL)
            forwarder.wait()
        subprocess.run(["ip", "link", "del", BRIDGE], check=False, capture_output=True)


def add_namespace(number: int) -> str:
    name = f"gxw{number}"
    run("ip", "netns", "add", name)
    run("ip", "link", "add", f"gxv{number}", "type", "veth", "peer", "name", "eth0",
        "netns", name)
    run("ip", "link", "set", f"gxv{number}", "master", BRIDGE, "up")
    run("ip", "-n", name, "addr", "add", f"{SUBNET}.{10 + number}/24", "dev", "eth0")
    run("ip", "-n", name, "link", "set", "eth0", "up")
    run("ip", "-n", name, "link", "set", "lo", "up")
    return name


def through_bridge(url: str) -> str:
    """`url` as seen from a namespace: its host replaced by the bridge's address."""
    if "://" not in url:
        return f"{HOST_IP}:{url.rpartition(':')[2]}"
    parts = urlsplit(url)
    login, _, _ = parts.netloc.rpartition("@")
    netloc = f"{login}@" if login else ""
    return urlunsplit(parts._replace(netloc=f"{netloc}{HOST_IP}:{parts.port}"))


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1]) if "://" not in url else int(urlsplit(url).port or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="temporal")
    parser.add_argument("--workers", default="2,4,8")
    parser.add_argument("--instances", default="10,50")
    parser.add_argument("--timeout", type=float, default=240.0)
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks/fleet.json"))
    args = parser.parse_args()
    settings = load_settings()
    services = [settings.ledger]
    services += [settings.temporal_address] if settings.temporal_address else []
    services += [settings.broker_url] if settings.broker_url else []
    isolated = namespaces_available()
    folder = Path(f"/tmp/graduate-fleet-scale-{os.getpid()}")
    (folder / "spikes").mkdir(parents=True)
    (folder / "pyproject.toml").write_text('[tool.graduate]\nspikes = "spikes"\n')
    flow = folder / "spikes" / "approval.toml"
    flow.write_text(FLOW.read_text().replace('name = "approval"', 'name = "fleet_scale"'))
    results = []
    with contextlib.ExitStack() as cleanup:
        if isolated:
            cleanup.enter_context(bridge(sorted({port_of(u) for u in services})))
        for count in (int(n) for n in args.workers.split(",")):
            results.extend(measure(settings, flow, args, count, isolated))
    machine = {"cpus": os.cpu_count(), "cpu": _cpu(), "kernel": platform.release(),
               "python": platform.python_version(), "load_before": os.getloadavg(),
               "isolation": "network namespace per worker" if isolated
               else "process group per worker",
               "shared": "PostgreSQL, broker, Temporal server (and their host)"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "engine": args.engine,
                                    "results": results}, indent=2))
    print(json.dumps({"machine": machine, "results": results}, indent=2))
    shutil.rmtree(folder, ignore_errors=True)


def measure(settings: Settings, flow: Path, args: argparse.Namespace, count: int,
            isolated: bool) -> list[dict[str, object]]:
    pool = f"scale{count}x{os.getpid()}"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GRADUATE_")}
    named = {"GRADUATE_LEDGER_URL": settings.ledger,
             "GRADUATE_TEMPORAL_ADDRESS": settings.temporal_address,
             "GRADUATE_BROKER_URL": settings.broker_url}
    environ.update({k: through_bridge(v) if isolated else v for k, v in named.items() if v})
    agents: list[subprocess.Popen[bytes]] = []
    namespaces: list[str] = []
    began = time.monotonic()
    fleet = FleetLedger(settings.ledger)
    try:
        for number in range(count):
            prefix: list[str] = []
            if isolated:
                namespaces.append(add_namespace(number))
                prefix = ["ip", "netns", "exec", namespaces[-1]]
            log = flow.parent.parent / f"w{count}-{number}.log"
            with log.open("wb") as out:
                agents.append(subprocess.Popen(
                    [*prefix, sys.executable, "-m", "graduate", "worker", str(flow),
                     "--engine", args.engine, "--name", f"{pool}-{number}", "--pool", pool],
                    cwd=flow.parent.parent, env=environ, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True))
        while len([w for w in fleet.workers(target="fleet_scale") if w.pool == pool]) < count:
            if time.monotonic() - began > 600 or any(a.poll() is not None for a in agents):
                raise SystemExit(f"workers did not register; see {flow.parent.parent}")
            time.sleep(0.2)
        registered = time.monotonic() - began
        rows = []
        for instances in (int(n) for n in args.instances.split(",")):
            started = time.monotonic()
            result = graduate.chaos(
                flow, engine=args.engine, fault="kill-worker", at="activate:before-effect",
                instances=instances, timeout=args.timeout, restart_delay=0.5,
                workers="external", settings=settings,
                evidence=flow.parent.parent / "evidence")
            wall = time.monotonic() - started
            commands = fleet.results(result.run_id)
            events = fleet.events(result.run_id)
            issued = {e.detail.split(" to worker")[0]: e.at for e in events
                      if e.kind.kind == "fleet-command-issued"}
            latencies = {c.kind.value: round((c.at or 0) - issued.get(c.kind.value, 0), 2)
                         for c in commands}
            counts = result.verdict.counts
            record = EvidenceStore(flow.parent.parent / "evidence").load_run(result.run_id)
            rows.append({
                "workers": count, "instances": instances,
                "registered_in_s": round(registered, 1), "run_wall_s": round(wall, 1),
                "command_issue_to_done_s": latencies,
                "completed": counts["completed"], "lost": counts["lost"],
                "stuck": counts["stuck"], "failed": counts["failed"],
                "passed": result.verdict.passed,
                # Starting many instances on a loaded machine can take longer than a step's
                # timeout: a point reached early is then long past when the fault fires.
                "all_started_at_s": next((e.at for e in record.timeline
                                          if e.kind == "instances-started"), None),
                "point_reached_at_s": next((e.at for e in record.timeline
                                            if e.kind == "fault-point-reached"), None),
                "failures": list(result.verdict.failures[:2]),
                "median_time_to_complete_s": _median([
                    i.time_to_complete for i in result.instances if i.time_to_complete]),
            })
            print(rows[-1], flush=True)
        return rows
    finally:
        for agent in agents:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(agent.pid, signal.SIGTERM)
        for agent in agents:
            try:
                agent.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()
        for name in namespaces:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        fleet.close()


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def _cpu() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
