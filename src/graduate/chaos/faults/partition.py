"""Cut the network between the workers and their broker or server, then heal it.

The workers reach their services through TCP proxies from the start of the run, so the
cut needs no help from the operating system.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from graduate.chaos.faults import FAULT_FIRED, Fault, FaultContext, FaultPlan
from graduate.chaos.proxy import Proxy
from graduate.config import Settings
from graduate.runs.timeline import EventKind
from graduate.services.model import Services
from graduate.services.provider import Stack

NAME = "partition"
HEALED = EventKind("network-healed", "network healed", "recovery")


class Partition(Fault):
    name = NAME
    description = "cut the network between workers and broker or server, then heal it"
    events = (FAULT_FIRED, HEALED)
    group = "service"
    heals_after = True

    def needs_own_workers(self, plan: FaultPlan) -> str | None:
        return ("the workers are registered, not started by graduate: their connections "
                "do not pass through a proxy graduate can cut; cut their network yourself")

    def worker_services(self, settings: Settings,
                        proxies: list[Proxy]) -> Callable[[Stack], Services] | None:
        return through_proxies(settings, proxies)

    def fire(self, context: FaultContext) -> None:
        for proxy in context.proxies:
            proxy.cut()
        context.timeline.add(FAULT_FIRED, "network cut between the workers and "
                                          f"{', '.join(p.name for p in context.proxies)}")
        context.release()
        partition_for = context.plan.partition_for
        time.sleep(partition_for)  # the partition's length, part of the scenario
        healing_from = time.time()  # work may pass the first healed proxy at once
        for proxy in context.proxies:
            proxy.heal()
        context.timeline.add(HEALED, f"after {partition_for:g}s", at=healing_from)


def through_proxies(settings: Settings, proxies: list[Proxy]) -> Callable[[Stack], Services]:
    """Put a TCP proxy between the workers and the broker or server, for a partition."""

    def route(stack: Stack) -> Services:
        services = stack.services
        folder = settings.state_dir / "proxies"
        if services.temporal is not None:
            host, port = _host_port(services.temporal.address)
            proxy = Proxy.start(folder, "temporal-proxy", host, port)
            proxies.append(proxy)
            services = replace(services, temporal=replace(services.temporal,
                                                          address=proxy.address))
        routed: dict[str, str] = {}
        for url in (services.broker_url, services.result_backend_url):
            if url and url.startswith(("redis://", "amqp://")) and url not in routed:
                scheme, _, rest = url.partition("://")
                credentials, _, location = rest.rpartition("@")
                hostport, _, path = location.partition("/")
                host, port = _host_port(hostport, 6379 if scheme == "redis" else 5672)
                proxy = Proxy.start(folder, f"{scheme}-proxy-{len(proxies)}", host, port)
                proxies.append(proxy)
                login = f"{credentials}@" if credentials else ""
                routed[url] = f"{scheme}://{login}{proxy.address}/{path}"
        return replace(services,
                       broker_url=routed.get(services.broker_url or "", services.broker_url),
                       result_backend_url=routed.get(services.result_backend_url or "",
                                                     services.result_backend_url))

    return route


def _host_port(address: str, default_port: int = 7233) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host:
        return address, default_port
    return host, int(port)


FAULT = Partition()
