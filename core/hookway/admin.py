"""What every management endpoint shares: the admin guard, Bifrost-shaped JSON answers and
errors, and reading a JSON-object body.

A handler wrapped in :func:`admin_only` may raise :class:`AdminError` anywhere; the guard turns it
into ``{"error": {"message", "type", "problems"?}, "status_code"}`` with the error's status."""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

import orjson
from aiohttp import web

GATEWAY_KEY = web.AppKey("hookway_gateway", object)

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 409: "conflict_error"}


class AdminError(Exception):
    """A management request refused: ``problems`` holds one line each, ``status`` the HTTP status."""

    def __init__(self, problems: list[str] | str, status: int = 400):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.status = status
        super().__init__("; ".join(self.problems))


def admin_json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def admin_error(status: int, message: str, problems: list[str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": _ERROR_TYPES.get(status, "api_error")},
            "status_code": status}
    if problems:
        body["error"]["problems"] = problems
    return admin_json(body, status)


async def json_object_body(request: web.Request) -> dict:
    """The request's JSON object (an empty body is ``{}``), or :class:`AdminError` 400."""
    raw = await request.read()
    try:
        body = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise AdminError(f"the request body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        raise AdminError("the request body must be a JSON object")
    return body


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def admin_only(handler):
    """Wrap a management handler: it needs ``server.admin_token`` (``Authorization: Bearer`` or
    ``x-admin-token``) when one is set, and otherwise answers only to loopback callers. An
    :class:`AdminError` raised by the handler becomes its error answer."""

    async def guarded(request: web.Request):
        gateway = request.app[GATEWAY_KEY]
        token = gateway.config.server.admin_token
        if token:
            given = request.headers.get("x-admin-token") or ""
            auth = request.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                given = given or auth[7:]
            if not hmac.compare_digest(given.encode(), token.encode()):
                return admin_error(401, "admin token required")
        elif not is_loopback(request.remote):
            return admin_error(403, "the management API answers only on loopback unless "
                                    "server.admin_token is set")
        try:
            return await handler(request)
        except AdminError as exc:
            return admin_error(exc.status, "; ".join(exc.problems), exc.problems)

    guarded.__name__ = getattr(handler, "__name__", "admin")
    guarded.hookway_admin = True
    return guarded


def has_admin_routes(app: web.Application) -> bool:
    return any(getattr(r.handler, "hookway_admin", False) for r in app.router.routes())
