"""Authentication and request-size guard of the scoring service (pure ASGI middleware)."""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from selfalign.core.errors import ConfigError

TOKEN_ENV = "SELFALIGN_SERVE_TOKEN"
# Paths anyone may read: liveness probes carry no token, and the API description is public.
OPEN_PATHS = frozenset({"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


def resolve_token(token: str | None, open_access: bool) -> str | None:
    """The token replicas check: the configured one, else ``$SELFALIGN_SERVE_TOKEN``.

    Refusing to start without one (unless ``open``) is deliberate: a scoring service that
    silently came up open because an env var was missing would be a quiet security hole.
    """
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is None and not open_access:
        raise ConfigError(
            f"no bearer token: set {TOKEN_ENV} (or token: in the config), "
            "or serve without authentication explicitly with --open / open: true",
        )
    return None if open_access else token


def bearer_ok(authorization: str | None, token: str | None) -> bool:
    """``Authorization: Bearer <token>`` matches ``token`` (constant-time); None = open."""
    if token is None:
        return True
    if not authorization:
        return False
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def relative_path(scope: Mapping[str, Any]) -> str:
    """The request path inside the application (Serve mounts apps under a route prefix)."""
    path = scope.get("path", "") or "/"
    root = scope.get("root_path", "") or ""
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


class GuardMiddleware:
    """ASGI middleware: bearer token, then body size, before any route sees the request.

    Runs before FastAPI parses anything, so an unauthenticated or oversized request costs
    no JSON parsing. A body with a Content-Length over the limit is refused at once; a
    chunked body is read up to the limit and then replayed to the application.
    """

    def __init__(self, app: Callable, *, token: str | None, max_request_bytes: int):
        self.app = app
        self.token = token
        self.max_bytes = max_request_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if relative_path(scope) not in OPEN_PATHS and not bearer_ok(
            headers.get("authorization"), self.token
        ):
            await send_json(
                send,
                401,
                {"error": "unauthorized", "detail": "missing or wrong bearer token"},
                extra_headers=[(b"www-authenticate", b'Bearer realm="selfalign"')],
            )
            return
        length = headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await send_json(send, 400, {"error": "bad request", "detail": "bad Content-Length"})
                return
            if declared > self.max_bytes:
                await send_json(send, 413, _too_large(self.max_bytes))
                return
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked upload): buffer up to the limit, then replay.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # disconnect: let the app see it
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await send_json(send, 413, _too_large(self.max_bytes))
                return
            chunks.append(body)
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _too_large(limit: int) -> dict[str, str]:
    return {"error": "request too large", "detail": f"body exceeds max_request_bytes={limit}"}


async def send_json(send, status: int, body: Any, extra_headers=()) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *extra_headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
