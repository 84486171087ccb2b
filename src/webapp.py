"""The Customer360 tab at /app/: the built web app (web/ in the repository, built into
src/web/), served with a strict Content-Security-Policy. On in development, off in
production unless C360_WEB_APP=1."""

from __future__ import annotations

from pathlib import Path

from starlette.responses import RedirectResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

WEB = Path(__file__).resolve().parent / "web"
# Scripts and styles from the gateway only (no inline script, no CDN, no fonts from
# elsewhere); the socket to the same host; no framing.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    # Names are not content-hashed: revalidate (ETag) so an upgrade shows at once.
    (b"cache-control", b"no-cache"),
]


class _Secured:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k for k, _ in HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message["headers"] = [*kept, *HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _to_slash(_: object) -> RedirectResponse:
    return RedirectResponse("/app/", status_code=308)


def routes() -> list[BaseRoute]:
    """GET /app redirects to /app/; /app/ and /app/index.html are the page, the rest its assets."""
    return [
        Route("/app", _to_slash, methods=["GET", "HEAD"]),
        Mount("/app", _Secured(StaticFiles(directory=WEB, html=True)), name="web-app"),
    ]
