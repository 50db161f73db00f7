"""The facade users touch: ``AsyncAccount`` (the one implementation) and ``Account`` (its blocking face).

Rule: constructors validate and do no I/O; endpoints are resolved lazily (explicit URL, then the
given profile, then discovery) and protocol work is delegated to the protocol packages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import ssl
import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from email_validator import EmailNotValidError, validate_email

from ._portal import Portal
from .config import (
    Credentials,
    Endpoint,
    OAuth2,
    Password,
    Protocol,
    Security,
    Timeouts,
    TokenProvider,
    check_line_safe,
)
from .errors import ConfigError, ConnectError, ConnectionLost, MailkitError, SecurityError
from .errors import TimeoutError as MailkitTimeoutError
from .tls import InsecureWarning, create_ssl_context

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
    from email.message import EmailMessage

    from .discovery.profile import Profile
    from .imap import IMAP, AsyncIMAP
    from .pop3 import POP3, AsyncPOP3
    from .smtp import SendResult
    from .smtp.bulk import BulkItem

__all__ = ["Account", "AccountSettings", "AsyncAccount"]

_TRUE = {"1", "true", "yes", "on"}

log = logging.getLogger("mailkit")

T = TypeVar("T")

# A server that no longer answers (as opposed to one that answers "no"): worth finding again.
_UNREACHABLE = (ConnectError, MailkitTimeoutError, ConnectionLost)


@dataclass(frozen=True)
class AccountSettings:
    """Everything an account knows before any I/O; shared by every protocol adapter."""

    address: str
    credentials: Credentials | None = None
    endpoints: Mapping[Protocol, Endpoint] = field(default_factory=dict)
    profile: Profile | None = None
    ca_file: str | None = None
    allow_insecure: bool = False
    timeouts: Timeouts = field(default_factory=Timeouts)
    test_environment: bool = False

    def __post_init__(self) -> None:
        check_line_safe(self.address, "address")
        try:
            validate_email(
                self.address, check_deliverability=False, test_environment=self.test_environment
            )
        except EmailNotValidError as exc:
            raise ConfigError(f"invalid address {self.address!r}: {exc}") from None
        for protocol, endpoint in self.endpoints.items():
            if endpoint.protocol is not protocol:
                raise ConfigError(f"{endpoint.url} given as the {protocol.value} endpoint")
            if endpoint.security is Security.INSECURE and not self.allow_insecure:
                raise SecurityError(
                    f"{endpoint.url} is plaintext; pass allow_insecure=True "
                    "(or MAILKIT_ALLOW_INSECURE=1 / --allow-insecure) to permit it"
                )

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    def login_user(self, endpoint: Endpoint | None = None) -> str:
        """The name to log in with: the endpoint's ``user@`` part, else the credentials' user."""
        if endpoint is not None and endpoint.user:
            return endpoint.user
        return self.credentials.user if self.credentials is not None else self.address

    def ssl_context(self) -> ssl.SSLContext:
        with warnings.catch_warnings():
            # The warning was given once when the account was made; do not repeat it per socket.
            warnings.simplefilter("ignore", InsecureWarning)
            return create_ssl_context(self.ca_file, allow_insecure=self.allow_insecure)


def _credentials(
    address: str, user: str | None, password: str | None, oauth2: TokenProvider | None
) -> Credentials | None:
    if password is not None and oauth2 is not None:
        raise ConfigError("give either password= or oauth2=, not both")
    login = user or address
    if oauth2 is not None:
        return OAuth2(login, oauth2)
    if password is not None:
        return Password(login, password)
    return None


def _endpoints(**urls: str | Endpoint | None) -> dict[Protocol, Endpoint]:
    endpoints = {}
    for name, value in urls.items():
        if value is None:
            continue
        protocol = Protocol(name)
        endpoint = value if isinstance(value, Endpoint) else Endpoint.parse(value, protocol)
        if endpoint.protocol is not protocol:
            raise ConfigError(f"{endpoint.url} given as the {name} endpoint")
        endpoints[protocol] = endpoint
    return endpoints


def settings_from_env(
    environ: Mapping[str, str] | None = None, **overrides: Any
) -> dict[str, Any]:
    """Read the MAILKIT_* variables of INTERFACE.md into Account keyword arguments."""
    env = os.environ if environ is None else environ
    kwargs: dict[str, Any] = {}
    if "MAILKIT_ADDRESS" in env:
        kwargs["address"] = env["MAILKIT_ADDRESS"]
    if "MAILKIT_PASSWORD" in env:
        kwargs["password"] = env["MAILKIT_PASSWORD"]
    elif "MAILKIT_PASSWORD_FILE" in env:
        kwargs["password"] = read_password_file(env["MAILKIT_PASSWORD_FILE"])
    for name in ("smtp", "imap", "pop3"):
        if env.get(f"MAILKIT_{name.upper()}"):
            kwargs[name] = env[f"MAILKIT_{name.upper()}"]
    if env.get("MAILKIT_CA_FILE"):
        kwargs["ca_file"] = env["MAILKIT_CA_FILE"]
    if env.get("MAILKIT_ALLOW_INSECURE", "").lower() in _TRUE:
        kwargs["allow_insecure"] = True
    if env.get("MAILKIT_TEST_ENVIRONMENT", "").lower() in _TRUE:
        kwargs["test_environment"] = True
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    if "address" not in kwargs:
        raise ConfigError("no address: set MAILKIT_ADDRESS or pass address=")
    return kwargs


def read_password_file(path: str | os.PathLike[str]) -> str:
    """The first line of a file, without its line ending (so ``echo pw > file`` works)."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read password file {os.fspath(path)!r}: {exc.strerror}") from None
    lines = text.splitlines()
    return lines[0] if lines else ""


class AsyncAccount:
    """One mailbox's SMTP, IMAP and POP3 access; ``async with`` it, or ``await aclose()``."""

    def __init__(
        self,
        address: str,
        *,
        password: str | None = None,
        oauth2: TokenProvider | None = None,
        user: str | None = None,
        smtp: str | Endpoint | None = None,
        imap: str | Endpoint | None = None,
        pop3: str | Endpoint | None = None,
        profile: Profile | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        allow_insecure: bool = False,
        timeouts: Timeouts | None = None,
        test_environment: bool = False,
    ) -> None:
        if allow_insecure:
            warnings.warn(
                "allow_insecure=True: plaintext and unverified TLS endpoints are permitted",
                InsecureWarning,
                stacklevel=2,
            )
        self.settings = AccountSettings(
            address=address,
            credentials=_credentials(address, user, password, oauth2),
            endpoints=_endpoints(smtp=smtp, imap=imap, pop3=pop3),
            profile=profile,
            ca_file=None if ca_file is None else os.fspath(ca_file),
            allow_insecure=allow_insecure,
            timeouts=timeouts or Timeouts(),
            test_environment=test_environment,
        )
        self._discovered: Profile | None = None
        self._discovery_lock = asyncio.Lock()
        self._closers: list[Callable[[], Awaitable[object]]] = []
        self._pop3: AsyncPOP3 | None = None
        self._closed = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> AsyncAccount:
        """Build from the MAILKIT_* environment variables; keyword arguments override them."""
        kwargs = settings_from_env(environ, **overrides)
        return cls(kwargs.pop("address"), **kwargs)

    @property
    def address(self) -> str:
        return self.settings.address

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<AsyncAccount {self.address} {state} credentials={self.settings.credentials!r}>"

    def _check_open(self) -> None:
        if self._closed:
            raise MailkitError("this account is closed")

    async def endpoint(self, protocol: Protocol | str) -> Endpoint:
        """The endpoint to use: explicit, from the given profile, or discovered (once)."""
        self._check_open()
        protocol = Protocol(protocol)
        explicit = self.settings.endpoints.get(protocol)
        if explicit is not None:
            return explicit
        profile = self.settings.profile or await self._discover()
        choice = profile.choice(protocol)
        if choice is None:
            # The profile knows why (plaintext only, bad certificate, timeouts): say that.
            raise profile.failure(protocol) or ConfigError(
                f"no working {protocol.value} server is known for {self.address}"
            )
        return choice.endpoint

    async def connect_with(self, protocol: Protocol | str, opener: Callable[[Endpoint], Awaitable[T]]) -> T:
        """``opener(endpoint)`` on this account's endpoint for ``protocol``.

        If the endpoint was found by discovery and stops answering (refused, timed out, closed
        before the greeting), discovery runs again for that protocol, once, and a different working
        endpoint is used. Explicit URLs and a given profile are the caller's choice: never replaced.
        """
        protocol = Protocol(protocol)
        endpoint = await self.endpoint(protocol)
        try:
            return await opener(endpoint)
        except _UNREACHABLE as exc:
            fresh = await self._rediscover(protocol, endpoint)
            if fresh is None:
                raise
            log.warning(
                "%s server %s no longer answers (%s); using %s", protocol.value, endpoint.url, exc, fresh.url
            )
        return await opener(fresh)

    async def _discover(self) -> Profile:
        async with self._discovery_lock:
            if self._discovered is None:
                # Only what was not given explicitly needs finding.
                wanted = [p for p in Protocol if p not in self.settings.endpoints]
                self._discovered = await self._run_discovery(wanted)
            return self._discovered

    async def _run_discovery(self, protocols: list[Protocol]) -> Profile:
        from .discovery import discover_async

        credentials = self.settings.credentials
        return await discover_async(
            self.address,
            credentials.password if isinstance(credentials, Password) else None,
            user=credentials.user if credentials is not None else None,
            protocols=protocols,
            ca_file=self.settings.ca_file,
            allow_insecure=self.settings.allow_insecure,
            timeouts=self.settings.timeouts,
            test_environment=self.settings.test_environment,
        )

    async def _rediscover(self, protocol: Protocol, failed: Endpoint) -> Endpoint | None:
        """A different working endpoint for ``protocol`` than ``failed``, or None."""
        if protocol in self.settings.endpoints or self.settings.profile is not None:
            return None
        async with self._discovery_lock:
            current = self._discovered.choice(protocol) if self._discovered is not None else None
            if current is not None and current.endpoint == failed:
                # The cache and its downgrade latch still apply: the dead endpoint is simply
                # probed again with the others, and the latch keeps plaintext out.
                try:
                    fresh = await self._run_discovery([protocol])
                except MailkitError as exc:
                    log.warning("rediscovering %s for %s failed: %s", protocol.value, self.address, exc)
                    return None
                assert self._discovered is not None
                known = {p: self._discovered.choice(p) for p in Protocol}
                known[protocol] = fresh.choice(protocol)
                self._discovered = dataclasses.replace(
                    self._discovered,
                    smtp=known[Protocol.SMTP],
                    imap=known[Protocol.IMAP],
                    pop3=known[Protocol.POP3],
                )
            choice = self._discovered.choice(protocol) if self._discovered is not None else None
        if choice is None or choice.endpoint == failed:
            return None
        return choice.endpoint

    def on_close(self, closer: Callable[[], Awaitable[object]]) -> None:
        """Register a coroutine function that ``aclose`` awaits (adapters keep connections open)."""
        self._closers.append(closer)

    @property
    def pop3(self) -> AsyncPOP3:
        """POP3 download-and-delete (see ``mailkit.pop3``)."""
        self._check_open()
        if self._pop3 is None:
            from .pop3 import AsyncPOP3

            self._pop3 = AsyncPOP3(self)
        return self._pop3

    def imap(self, mailbox: str | None = None) -> AsyncIMAP:
        """A new IMAP session: ``async with account.imap() as imap: ...``."""
        self._check_open()
        from .imap import AsyncIMAP

        return AsyncIMAP(self, mailbox)

    async def send(self, message: EmailMessage | bytes | None = None, **parts: Any) -> SendResult:
        """Send one message (see ``mailkit.smtp``): ``await acct.send(to=..., subject=..., text=...)``."""
        self._check_open()
        from .smtp import smtp_for

        return await smtp_for(self).send(message, **parts)

    async def send_many(
        self, messages: Iterable[BulkItem] | AsyncIterable[BulkItem], **options: Any
    ) -> AsyncIterator[SendResult]:
        """Send a campaign; yields a SendResult per message as each completes (see ``mailkit.smtp``)."""
        self._check_open()
        from contextlib import aclosing

        from .smtp import smtp_for

        async with aclosing(smtp_for(self).send_many(messages, **options)) as results:
            async for result in results:
                yield result

    async def aclose(self) -> None:
        """Close every connection this account opened; the account cannot be used afterwards."""
        if self._closed:
            return
        self._closed = True
        errors: list[BaseException] = []
        for closer in reversed(self._closers):
            try:
                await closer()
            except Exception as exc:  # noqa: BLE001 - close the rest before reporting
                errors.append(exc)
        self._closers.clear()
        if errors:
            raise errors[0]

    async def __aenter__(self) -> AsyncAccount:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Account:
    """The blocking face of ``AsyncAccount``: same names, same arguments, no ``await``."""

    def __init__(self, address: str, **options: Any) -> None:
        self._async = AsyncAccount(address, **options)
        self._portal = Portal()
        self._pop3: POP3 | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Account:
        kwargs = settings_from_env(environ, **overrides)
        return cls(kwargs.pop("address"), **kwargs)

    @property
    def async_account(self) -> AsyncAccount:
        return self._async

    @property
    def portal(self) -> Portal:
        return self._portal

    @property
    def address(self) -> str:
        return self._async.address

    @property
    def settings(self) -> AccountSettings:
        return self._async.settings

    def __repr__(self) -> str:
        return repr(self._async).replace("<AsyncAccount", "<Account", 1)

    def endpoint(self, protocol: Protocol | str) -> Endpoint:
        return self._portal.call(self._async.endpoint(protocol))

    @property
    def pop3(self) -> POP3:
        if self._pop3 is None:
            from .pop3 import POP3

            self._pop3 = POP3(self._async.pop3, self._portal)
        return self._pop3

    def imap(self, mailbox: str | None = None) -> IMAP:
        from .imap import IMAP

        return IMAP(self._async.imap(mailbox), self._portal)

    def send(self, message: EmailMessage | bytes | None = None, **parts: Any) -> SendResult:
        return self._portal.call(self._async.send(message, **parts))

    def send_many(
        self, messages: Iterable[BulkItem] | AsyncIterable[BulkItem], **options: Any
    ) -> Iterator[SendResult]:
        return self._portal.iterate(self._async.send_many(messages, **options))

    def close(self) -> None:
        self._portal.close(self._async.aclose())

    def __enter__(self) -> Account:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
