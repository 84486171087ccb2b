"""GraphQL over HTTP answers: the media type a client prefers, and request errors (ours and
strawberry's) as GraphQL responses with the contract's codes."""

from __future__ import annotations

import functools

import orjson
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Send

GRAPHQL_RESPONSE = "application/graphql-response+json"


def _weights(accept: str) -> dict[str, tuple[float, int]]:
    """Each listed media type's (q, -position): a higher q wins, then the earlier one."""
    weights: dict[str, tuple[float, int]] = {}
    for position, part in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        weights.setdefault(media.lower(), (q, -position))
    return weights


def _quality(weights: dict[str, tuple[float, int]], media: str) -> tuple[float, int] | None:
    """The weight of the most specific range that names `media`: itself, type/*, */*."""
    for key in (media, media.split("/")[0] + "/*", "*/*"):
        if key in weights:
            return weights[key]
    return None


@functools.lru_cache(maxsize=256)  # a client sends the same Accept on every request
def prefers_graphql_response(accept: str) -> bool:
    """True when the client would rather have application/graphql-response+json than plain
    JSON: a higher `q`, or the same from a range listed first. Wildcards alone leave the
    answer plain JSON, what clients that predate the new type expect."""
    weights = _weights(accept)
    ours = _quality(weights, GRAPHQL_RESPONSE)
    if ours is None or ours[0] <= 0:
        return False
    plain = _quality(weights, "application/json")
    return plain is None or ours > plain


def transport_error(status: int, reason: str) -> Response:
    """strawberry's own refusals (a body that is not JSON, no query, a mutation over GET...)
    as a GraphQL response with the contract's codes, not plain text a GraphQL client cannot
    read."""
    code = "NOT_FOUND" if status == 404 else "BAD_USER_INPUT"
    headers = {"Allow": "GET, POST"} if status == 405 else None
    body = {"errors": [{"message": reason, "extensions": {"code": code}}]}
    return JSONResponse(body, status, headers=headers)


class GraphQLResponseSend:
    """Answers as `application/graphql-response+json` (GraphQL over HTTP): a request error
    (parse, validation, variable coercion: errors without a path and no data) is a 400 and
    carries no `data` entry."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.start: Message | None = None
        self.body = b""

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
            return
        if message["type"] != "http.response.body" or self.start is None:
            await self.send(message)
            return
        self.body += message.get("body", b"")
        if message.get("more_body"):
            return
        start, body = self.start, self.body
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-type"]
        status = start["status"]
        if status == 200:
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                doc = None
            if (
                isinstance(doc, dict)
                and doc.get("data") is None
                and doc.get("errors")
                and all("path" not in e for e in doc["errors"])
            ):
                doc.pop("data", None)
                body, status = orjson.dumps(doc), 400
        headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        headers += [
            (b"content-type", GRAPHQL_RESPONSE.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await self.send({**start, "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})
