"""Page sizes and page tokens (AIP-158).

Tokens are opaque to clients but tamper-evident: a base64url JSON cursor plus an
HMAC over it and the query it belongs to. A token edited by hand, or replayed
with other filters, is refused with INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from services.runtime.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def page_size(requested: int) -> int:
    """The page size to use: 20 when unset, at most 100."""
    if requested < 0:
        raise InvalidArgument([("page_size", "must not be negative")])
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


class PageTokens:
    """Encodes and checks page tokens with a key every instance of a service shares."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def encode(self, cursor: Mapping[str, Any], query: Mapping[str, Any]) -> str:
        body = _b64(json.dumps(dict(cursor), sort_keys=True, separators=(",", ":")).encode())
        return f"{body}.{_b64(self._sign(body, query))}"

    def decode(self, token: str, query: Mapping[str, Any]) -> dict[str, Any] | None:
        """The cursor in `token`, or None for an empty token (the first page)."""
        if not token:
            return None
        body, _, mac = token.partition(".")
        try:
            # compare_digest takes only ASCII str; a token we issued is always ASCII.
            valid = token.isascii() and hmac.compare_digest(mac, _b64(self._sign(body, query)))
            cursor = json.loads(_unb64(body)) if valid else None
        except (ValueError, binascii.Error):
            cursor = None
        if not isinstance(cursor, dict):
            raise InvalidArgument(
                [("page_token", "is not a token this query returned")], "invalid page token"
            )
        return cursor

    def _sign(self, body: str, query: Mapping[str, Any]) -> bytes:
        scope = json.dumps(dict(query), sort_keys=True, separators=(",", ":"))
        return hmac.new(self._key, f"{body}|{scope}".encode(), hashlib.sha256).digest()[:16]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
