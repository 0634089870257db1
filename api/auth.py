"""API keys: with HEARTH_API_KEY (or HEARTH_API_KEYS) set, every endpoint but /healthz needs one.

Sent as `x-api-key` (Anthropic's header) or `Authorization: Bearer` (OpenAI's).
Keys are compared in constant time. The caller's identity, a hash of its key,
goes into the ASGI scope so jobs and batches can be kept to their submitter.
"""

import hashlib
import hmac
import json
from urllib.parse import parse_qs

OPEN_PATHS = {"/healthz"}


def principal_of(scope) -> str | None:
    """Who is calling: a hash of the API key, or None when keys are not in use."""
    return scope.get("state", {}).get("principal")


def presented_key(scope) -> str:
    headers = dict(scope["headers"])
    key = headers.get(b"x-api-key", b"").decode("latin-1")
    if not key:
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else ""
    if not key and (scope["path"] == "/" or scope["path"].startswith("/status")):
        # The status page and its stream: a browser's EventSource cannot send headers.
        key = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("key", [""])[0]
    return key


class ApiKeyMiddleware:
    def __init__(self, app, keys):
        self.app = app
        self.keys = [k.encode() for k in keys]

    async def __call__(self, scope, receive, send):
        if not self.keys or scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        key = presented_key(scope).encode()
        # Compare with every key, whatever matches, so timing says nothing about which.
        matched = [hmac.compare_digest(key, k) for k in self.keys]
        if not key or not any(matched):
            return await self._deny(send, "a valid API key is required (x-api-key or Authorization: Bearer)")
        scope.setdefault("state", {})["principal"] = hashlib.sha256(key).hexdigest()[:32]
        await self.app(scope, receive, send)

    @staticmethod
    async def _deny(send, message: str):
        body = json.dumps({"type": "error", "error": {"type": "authentication_error", "message": message}}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
