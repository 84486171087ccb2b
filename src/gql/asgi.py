"""A GraphQL POST read and answered at the ASGI level: what starlette's Request and Response
do for it, without building either (their header objects, the body's async generator and the
response's header list cost more per request than the compiled path's own work on S1)."""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Send

# The request headers a POST /graphql reads: the token, the tenant, the media types.
READ = frozenset({b"authorization", b"x-tenant-id", b"accept", b"content-type"})
JSON = (b"content-type", b"application/json")


def request_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The headers of READ that were sent, each its first value (as Headers.get has it)."""
    found: dict[str, str] = {}
    for key, value in raw:
        if key in READ:
            found.setdefault(key.decode("latin-1"), value.decode("latin-1"))
    return found


async def read_body(receive: Receive) -> bytes:
    """The whole body, as Request.body() reads it (ClientDisconnect when the client left)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            body: bytes = message.get("body", b"")
            if not message.get("more_body", False):
                if not chunks:
                    return body  # nearly always: the whole body in one message
                chunks.append(body)
                return b"".join(chunks)
            chunks.append(body)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()


def replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for a request whose body was read already: that body first, then what the
    server says (a disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


async def send_json(send: Send, body: bytes) -> None:
    """A 200 with a JSON body: the messages starlette's Response(body, media_type=...) sends."""
    headers = [(b"content-length", str(len(body)).encode("latin-1")), JSON]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
