"""The sealer: links committed history into each tenant's chain, after commit, in batches.

It leads like a relay sink (one leader across all gateway processes, a session advisory
lock on a private connection; events/relay.py), on a lease of its own so that neither a
Kafka nor a Redis outage holds it back, and the relays publish an audit event only once it
is sealed (data/chain.py, migration 0011).

Writers wake it after their commit: directly when this process leads, else with a NOTIFY
outside any transaction, at most one in flight per process. Missed wakes cost at most the
relay's poll interval (a CLI process writing with no gateway of its own, say).
"""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from customer360.data.chain import SEAL_CHANNEL, WAKE_SEALER, seal_all
from customer360.observability import get_logger

log = get_logger("customer360.sealer")
CLOSE_SECONDS = 2.0


class Sealer:
    name = "sealer"
    channel = SEAL_CHANNEL

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._wake: asyncio.Event | None = None  # set while this process leads
        self._notifying: asyncio.Task[None] | None = None
        self._again = False

    def poke(self) -> None:
        """After a commit that left history to seal (the unit of work's hook)."""
        if self._wake is not None:
            self._wake.set()
        elif self._notifying is not None:
            self._again = True  # one more NOTIFY once the one in flight is done
        else:
            self._notifying = asyncio.ensure_future(self._notify())

    async def _notify(self) -> None:
        try:
            while True:
                self._again = False
                try:
                    async with self.engine.connect() as conn:
                        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                        await conn.execute(text(WAKE_SEALER))
                except Exception as exc:  # the leader's poll finds the rows anyway
                    log.warning("sealer wake failed", error=type(exc).__name__)
                if not self._again:
                    return
        finally:
            self._notifying = None

    def lead(self, wake: asyncio.Event | None) -> None:
        """The relay's loop hands over its wake event while this process leads."""
        self._wake = wake

    async def drain(self, conn: AsyncConnection) -> int:
        return await seal_all(conn)

    async def reset(self) -> None:
        return None

    async def close(self) -> None:
        """The last wake goes out (a command-line process ends right after its write), within
        a bound: the leader's poll would find the rows anyway."""
        notifying = self._notifying
        if notifying is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(notifying), CLOSE_SECONDS)
        notifying.cancel()
        with contextlib.suppress(BaseException):
            await notifying
