"""Metrics an operator can trust whatever the worker count.

One worker per container (the Kubernetes manifests) needs nothing more: /metrics is that
process. `c360 serve --workers N` (docker-compose runs 2) puts prometheus-client in
multiprocess mode, so any worker answering a scrape reports the whole server: counters and
histograms summed, gauges combined by their `multiprocess_mode`. Multiprocess mode has no
process collector, so each worker samples its own CPU and memory into gauges kept per pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import tempfile
from collections.abc import AsyncIterator

from prometheus_client import CollectorRegistry, Gauge, generate_latest, multiprocess

from customer360.observability import REGISTRY

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
SAMPLE_SECONDS = 5.0

PROCESS_MEMORY = Gauge(
    "c360_process_resident_memory_bytes",
    "Resident memory of each gateway process",
    registry=REGISTRY,
    multiprocess_mode="liveall",
)
PROCESS_CPU = Gauge(
    "c360_process_cpu_seconds",
    "CPU time (user + system) each gateway process has used",
    registry=REGISTRY,
    multiprocess_mode="liveall",
)


def prepare_workers(workers: int) -> None:
    """Before uvicorn starts several workers: a fresh folder for their shared metric files.
    Must run before any worker imports prometheus-client (they inherit the environment)."""
    if workers > 1 and not os.environ.get(MULTIPROCESS_DIR):
        os.environ[MULTIPROCESS_DIR] = tempfile.mkdtemp(prefix="c360-metrics-")


def exposition() -> bytes:
    """The text a scrape gets: this process's registry, or every worker's together."""
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def sample_process() -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    PROCESS_CPU.set(usage.ru_utime + usage.ru_stime)
    try:
        with open("/proc/self/statm") as statm:
            PROCESS_MEMORY.set(int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except OSError:  # not Linux: the peak is the best there is
        PROCESS_MEMORY.set(usage.ru_maxrss * 1024)


@contextlib.asynccontextmanager
async def process_metrics() -> AsyncIterator[None]:
    """This process's CPU and memory sampled while it serves; its per-pid gauges withdrawn
    when it stops (a worker killed outright leaves them until the server restarts)."""

    async def sample() -> None:
        while True:
            sample_process()
            await asyncio.sleep(SAMPLE_SECONDS)

    task = asyncio.create_task(sample())
    try:
        yield
    finally:
        task.cancel()
        if os.environ.get(MULTIPROCESS_DIR):
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
