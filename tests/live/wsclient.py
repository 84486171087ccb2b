"""A minimal graphql-transport-ws client on `websockets`, for tests that need to see every
frame and close code, which a full client library handles out of sight."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection


class Socket:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> str:
        self.next_id += 1
        sid = str(self.next_id)
        await self.ws.send(
            json.dumps(
                {
                    "id": sid,
                    "type": "subscribe",
                    "payload": {"query": query, "variables": variables or {}},
                }
            )
        )
        return sid

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame other than ping/pong."""
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
            msg: dict[str, Any] = json.loads(raw)
            if msg["type"] == "ping":
                await self.ws.send(json.dumps({"type": "pong"}))
                continue
            if msg["type"] != "pong":
                return msg

    async def events(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        out = []
        while len(out) < n:
            msg = await self.receive(timeout)
            assert msg["type"] == "next", msg
            assert "errors" not in msg["payload"], msg
            out.append(msg["payload"]["data"]["lifecycleChanged"])
        return out

    async def closed_with(self, timeout: float = 5.0) -> int | None:
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


def ws_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://") + "/graphql"


@asynccontextmanager
async def connect(
    http_url: str, payload: dict[str, Any] | None, *, ack: bool = True, origin: str | None = None
) -> AsyncIterator[Socket]:
    headers = {"Origin": origin} if origin else None
    async with websockets.connect(
        ws_url(http_url),
        subprotocols=["graphql-transport-ws"],
        additional_headers=headers,
        compression=None,
    ) as ws:
        sock = Socket(ws)
        await ws.send(json.dumps({"type": "connection_init", "payload": payload or {}}))
        if ack:
            msg = await sock.receive()
            assert msg["type"] == "connection_ack", msg
        yield sock
