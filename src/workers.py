"""The worker processes of `c360 serve --workers N` end with their supervisor.

uvicorn's supervisor stops its workers when it is stopped, but a supervisor that is killed
(SIGKILL, the OOM killer) cannot: its workers went on serving from the listening socket they
share, leading the outbox relay and holding live sockets, with no process an operator
watches, beside a supervisor started again. Each worker watches its parent and, once it is
gone, stops as on any stop (SIGTERM: sockets closed with a code clients retry, Kafka
partitions handed over), or exits outright if that takes longer than a stop may.
In a container (one worker per pod) the container's end takes every process anyway.
A worker's own stop is bounded too (`stopping`): with its supervisor waiting for it, a stop
that never ends would keep the whole server from stopping.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

from customer360.observability import get_logger

log = get_logger("customer360.workers")
# uvicorn gives connections this long to finish once stopped (tls.server_options); the
# watch gives the whole stop a little more before it exits regardless.
GRACEFUL_SECONDS = 20
HARD_EXIT_SECONDS = GRACEFUL_SECONDS + 10.0


def end_with_supervisor(
    check_seconds: float = 1.0, hard_exit_seconds: float = HARD_EXIT_SECONDS
) -> None:
    """In a worker process (a multiprocessing child): stop once the parent is gone."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return
    watch = threading.Thread(
        target=_watch,
        args=(parent.pid, check_seconds, hard_exit_seconds),
        name="supervisor-watch",
        daemon=True,
    )
    watch.start()


def stopping(hard_exit_seconds: float = HARD_EXIT_SECONDS) -> None:
    """A worker's stop has begun (its application is shutting down): if the stop has not
    ended within `hard_exit_seconds`, the worker exits regardless. With its backends gone,
    a client library can wait for them for ever (seen: a worker stuck in its stop for
    minutes), and its supervisor would wait for the worker as long."""
    if multiprocessing.parent_process() is None:
        return
    threading.Thread(
        target=_exit_after, args=(hard_exit_seconds,), name="stop-deadline", daemon=True
    ).start()


def _watch(parent: int, check_seconds: float, hard_exit_seconds: float) -> None:
    while os.getppid() == parent:
        time.sleep(check_seconds)
    log.error("supervisor gone; stopping", supervisor=parent)
    os.kill(os.getpid(), signal.SIGTERM)
    _exit_after(hard_exit_seconds)


def _exit_after(seconds: float) -> None:
    time.sleep(seconds)
    log.error("stopping took too long; exiting", seconds=seconds)
    os._exit(1)
