"""Who may use the queue: the scorer API's bearer token (Settings.api_token), or a session cookie derived
from it.

The browser logs in once with the token and the analyst's name; the cookie then holds the name and an
HMAC-SHA256 of it keyed by the token, so the cookie cannot be forged without the token, carries no secret,
and every session ends when the token is rotated. It is HttpOnly (no script reads it) and SameSite=Strict
(no other site can make the browser post a decision with it). Without a token (development), anyone may
log in under any name, exactly as /score is open then.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from fraudwatch.config import Settings

__all__ = ["ANALYST_PATTERN", "COOKIE", "bearer_ok", "session_analyst", "session_cookie", "token_ok"]

COOKIE = "fraudwatch_review_session"
#: analyst names: short, printable, no separators a log line or the label's source could be confused by
ANALYST_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
_ANALYST = re.compile(ANALYST_PATTERN)
_CONTEXT = b"fraudwatch-review-session\x00"


def _key(settings: Settings) -> bytes:
    return settings.api_token.get_secret_value().encode() if settings.api_token is not None else b""


def token_ok(settings: Settings, supplied: str) -> bool:
    """The supplied token is the configured one (always true when none is configured)."""
    if settings.api_token is None:
        return True
    return hmac.compare_digest(supplied.encode(), _key(settings))


def bearer_ok(settings: Settings, authorization: str | None) -> bool:
    """An ``Authorization: Bearer <token>`` header carries the configured token."""
    if settings.api_token is None:
        return True
    scheme, _, value = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and token_ok(settings, value.strip())


def _sign(settings: Settings, analyst: str) -> str:
    return hmac.new(_key(settings), _CONTEXT + analyst.encode(), hashlib.sha256).hexdigest()


def session_cookie(settings: Settings, analyst: str) -> str:
    """The cookie value of a logged-in analyst: ``<name>.<hmac>``."""
    return f"{analyst}.{_sign(settings, analyst)}"


def session_analyst(settings: Settings, cookie: str | None) -> str | None:
    """The analyst a cookie was issued to, or None when it is missing, malformed or not signed by the token."""
    if not cookie:
        return None
    analyst, _, signature = cookie.rpartition(".")
    if not _ANALYST.match(analyst):
        return None
    return analyst if hmac.compare_digest(signature, _sign(settings, analyst)) else None
