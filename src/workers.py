"""The worker processes of `c360 serve --workers N` end with their supervisor.

uvicorn's supervisor stops its workers when it is stopped, but a supervisor that is killed
(SIGKILL, the OOM killer) cannot: its workers went on serving from the listening socket they
share, leading the outbox relay and holding live sockets, with no process an operator
watches, and a supervisor started again beside them. Linux signals a process when its parent
dies, if asked (`prctl(PR_SET_PDEATHSIG)`); a worker asks for SIGTERM and stops as on any
stop. In a container (one worker per pod) the container's end takes every process anyway.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys

from customer360.observability import get_logger

log = get_logger("customer360.workers")
PR_SET_PDEATHSIG = 1


def end_with_supervisor() -> None:
    """In a worker process (a multiprocessing child): be stopped when the parent dies."""
    parent = multiprocessing.parent_process()
    if parent is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("cannot ask to end with the supervisor", errno=ctypes.get_errno())
        return
    if os.getppid() != parent.pid:  # it died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)
