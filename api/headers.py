"""The headers every answer of the API carries, the console's stricter than the machines' endpoints.

Every answer: not to be framed (``X-Frame-Options``), its type not guessed (``nosniff``), no address sent on from a
link (``Referrer-Policy``). The console's pages also carry a Content-Security-Policy that lets them load nothing
but the console's own style sheet (no script at all, no inline style, forms posted only to the console), and are
never stored by a browser or a proxy (``no-store``: after log-out, going back shows the log-in page, not data).
The API's other endpoints carry no CSP: the OpenAPI page (``/docs``) loads its scripts from a CDN.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONSOLE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
               "base-uri 'none'")
EVERY_ANSWER = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
CONSOLE_ANSWER = {**EVERY_ANSWER, "Content-Security-Policy": CONSOLE_CSP, "Cache-Control": "no-store"}


class SecurityHeaders:
    """ASGI middleware adding :data:`EVERY_ANSWER` (:data:`CONSOLE_ANSWER` under ``/console``) where the
    answer has not set the header itself (the console's style sheet may be cached)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wanted = CONSOLE_ANSWER if scope["path"].startswith("/console") else EVERY_ANSWER

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in wanted.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
