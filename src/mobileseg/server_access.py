"""Who may use ``mobileseg serve``: the bearer token, the ``Host`` check on loopback, the exposure warning.

Loopback (``127.0.0.1``) is the default; binding elsewhere without a token prints :func:`exposure_warning`. On
loopback :class:`HostCheck` requires the ``Host`` header to name loopback too, so a web page on another site
cannot reach the server through DNS rebinding. With a token, :func:`token_dependency` makes every API route check
``Authorization: Bearer <token>`` in constant time.

Example:
    >>> exposure_warning("127.0.0.1", None) is None
    True
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated, Any

from mobileseg.upload import ApiError

try:
    from fastapi import Depends
    from fastapi.responses import JSONResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"mobileseg serve needs the 'serve' extra ({e.name} is missing): pip install 'mobileseg[serve]'"
    ) from e

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# auto_error=False: a missing header is answered by check_token, as {"error": ...} like every other error.
BEARER = HTTPBearer(auto_error=False, description="the server's token (token= / $MOBILESEG_TOKEN)")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) means this machine only."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, token: str | None) -> str | None:
    """The warning to print when the server is reachable from other machines without a token, else ``None``."""
    if token or is_loopback(host):
        return None
    return (
        f"serving on {host} without a token: anyone who can reach this machine can use the model. "
        "Set token=<secret> (or $MOBILESEG_TOKEN), or bind host=127.0.0.1."
    )


class HostCheck:
    """Pure ASGI middleware: refuse requests whose ``Host`` is not one of ``allowed`` (400, JSON).

    For a server on loopback this stops DNS rebinding: a site that re-points its own name at 127.0.0.1 still sends
    its own name as ``Host``. (Starlette's TrustedHostMiddleware does the same but answers plain text.)
    """

    def __init__(self, app: ASGIApp, allowed: list[str]) -> None:
        self.app, self.allowed = app, {h.lower() for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name.strip("[]") not in self.allowed and name not in self.allowed:
                response = JSONResponse({"error": f"host {host!r} not allowed"}, status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def token_dependency(token: str | None) -> list[Any]:
    """The dependency list for API routes: none without a token, else a constant-time bearer check."""
    if token is None:
        return []

    def check_token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None:
            raise ApiError(401, "this server needs a token: send 'Authorization: Bearer <token>'", challenge)
        # Constant time, so response timing does not leak how much of a guess was right.
        if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise ApiError(401, "wrong token", challenge)

    return [Depends(check_token)]
