"""Minting OAuth2 bearer tokens that the local mail stack's Dovecot accepts (pure standard library).

The stack validates tokens locally (``introspection_mode = local``): a token is a JWT signed
HS256 with the key ``scripts/mailstack up`` generates, its ``sub`` the login name, and ``exp``
in the future. Tokens made here are what an identity provider would hand a client.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["KEY_PATH", "mint_jwt", "read_key"]

# Under MAILSTACK_ROOT. Dovecot looks a key up as <azp>/<alg>/<kid>, each "default" when the
# token does not name one: our tokens name none.
KEY_PATH = Path("oauth2", "keys", "default", "HS256", "default")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def read_key(path: Path) -> bytes:
    """The raw HMAC key from the file Dovecot reads (base64, as its key dictionary stores it)."""
    return base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True)


def mint_jwt(
    key: bytes,
    subject: str,
    *,
    expires_in: float = 3600,
    now: float | None = None,
    claims: Mapping[str, object] | None = None,
) -> str:
    """An HS256 JWT for ``subject``, valid for ``expires_in`` seconds (negative: already expired).

    ``claims`` adds or overrides body fields (``iat``, ``nbf``, ``azp``, ...).
    """
    # Backdated a second, as identity providers do for clock skew: Dovecot refuses iat > time(),
    # and time() reads the kernel's coarse clock, a few ms behind time.time() - a token minted in
    # the first milliseconds of a second was now and then "issued in future".
    issued = int(time.time()) - 1 if now is None else int(now)
    header = {"alg": "HS256", "typ": "JWT"}
    expires = issued + int(expires_in)
    # An expired token was issued before it expired (Dovecot refuses exp < iat as conflicting).
    body: dict[str, object] = {"sub": subject, "iat": min(issued, expires), "exp": expires}
    body.update(claims or {})
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(body).encode())}"
    signature = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"
