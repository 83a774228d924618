"""API keys: `Authorization: Bearer KEY` (what OpenAI clients send) or `X-API-Key: KEY`.

Keys are compared as SHA-256 digests with `hmac.compare_digest`, against every configured key
without stopping at the first match, so the time taken reveals neither a key's length nor which
key nor how much of one matched.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from service.api.errors import ApiError


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class KeyChecker:
    """A FastAPI dependency: 401 unless the request carries one of the keys (no keys: open)."""

    def __init__(self, keys: list[str]) -> None:
        self._digests = [_digest(k) for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def matches(self, presented: str | None) -> bool:
        if presented is None:
            return False
        candidate = _digest(presented)
        ok = False
        for digest in self._digests:
            ok |= hmac.compare_digest(digest, candidate)
        return ok

    async def __call__(self, request: Request) -> None:
        if not self._digests:
            return
        presented = request.headers.get("x-api-key")
        auth = request.headers.get("authorization")
        if presented is None and auth is not None:
            scheme, _, token = auth.partition(" ")
            presented = token.strip() if scheme.lower() == "bearer" else None
        if not self.matches(presented):
            message = "missing API key" if presented is None else "invalid API key"
            raise ApiError(
                401,
                f"{message}: send 'Authorization: Bearer KEY'",
                reason="unauthorized",
                headers={"WWW-Authenticate": "Bearer"},
            )
