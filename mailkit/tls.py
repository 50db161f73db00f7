"""The one TLS policy: certifi's bundle (plus an optional CA file), TLS 1.2 or newer, host names checked.

Unverified TLS exists only behind ``allow_insecure=True``, and says so with a warning each time.
"""

from __future__ import annotations

import logging
import os
import ssl
import warnings
from functools import lru_cache

import certifi

from .errors import ConfigError

__all__ = ["InsecureWarning", "create_ssl_context"]

log = logging.getLogger("mailkit.tls")


class InsecureWarning(UserWarning):
    """Emitted whenever certificate checks or encryption are switched off by request."""


def create_ssl_context(
    ca_file: str | os.PathLike[str] | None = None, *, allow_insecure: bool = False
) -> ssl.SSLContext:
    """Return a client context; contexts are cached per (ca_file, allow_insecure) as they are costly."""
    path = None if ca_file is None else os.fspath(ca_file)
    if path is not None and not os.path.isfile(path):
        raise ConfigError(f"CA file {path!r} does not exist or is not a file")
    if allow_insecure:
        message = "allow_insecure=True: TLS certificates are not verified"
        warnings.warn(message, InsecureWarning, stacklevel=2)
        log.warning(message)
    return _cached_context(path, allow_insecure)


@lru_cache(maxsize=8)
def _cached_context(ca_file: str | None, allow_insecure: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=certifi.where())
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except ssl.SSLError as exc:
            raise ConfigError(f"CA file {ca_file!r} holds no usable certificate: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if allow_insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
    return context
