"""The console's session: the API token in an HttpOnly cookie, and a CSRF token bound to it.

The cookie holds the token itself, so every request is checked against the keyring exactly
as an API call is (a revoked token stops working at once, on every replica). The CSRF token
is an HMAC of a fixed label keyed by the API token: a page can show it, another site cannot
compute it, and no server-side session store is needed.
"""

from __future__ import annotations

import hashlib
import hmac

COOKIE = "tessera_console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
COOKIE_PATH = "/console"


def csrf_token(api_token: str) -> str:
    return hmac.new(api_token.encode(), b"tessera-console-csrf", hashlib.sha256).hexdigest()


def csrf_matches(api_token: str, offered: str | None) -> bool:
    return bool(offered) and hmac.compare_digest(csrf_token(api_token), offered)


def session_cookie(api_token: str, *, secure: bool) -> str:
    attributes = ["HttpOnly", "SameSite=Strict", f"Path={COOKIE_PATH}"]
    if secure:
        attributes.append("Secure")
    return f"{COOKIE}={api_token}; " + "; ".join(attributes)


def cleared_cookie() -> str:
    return f"{COOKIE}=; Max-Age=0; HttpOnly; SameSite=Strict; Path={COOKIE_PATH}"
