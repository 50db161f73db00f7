"""An asyncio POP3 client around the sans-I/O core: the only code here that touches the network.

Rule: every read and connect has a timeout, every failure leaves as a MailkitError, and commands
are pipelined only when the server advertised PIPELINING. STARTTLS is required when the endpoint
says so (never "if offered"), and after the upgrade CAPA is asked again.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from types import TracebackType
from typing import TypeVar

from .. import _sasl
from .._log import log_sent
from .._net import Stream, open_stream, pending_plaintext, start_tls
from ..config import Credentials, Endpoint, OAuth2, Password, Security, Timeouts
from ..errors import (
    AuthenticationError,
    ConfigError,
    ConnectionLost,
    MailkitError,
    PermanentError,
    ProtocolError,
    SecurityError,
    TimeoutError,
    TransientError,
    translate_os_error,
)
from ._protocol import (
    NEED_DATA,
    BodyChunk,
    Capabilities,
    Command,
    Continuation,
    Limits,
    POP3Core,
    Response,
    apop_digest,
    parse_capa,
    parse_scan_listing,
    parse_stat,
    parse_uidl_listing,
    sasl_login,
)

__all__ = ["MECHANISMS", "POP3Client"]

log = logging.getLogger("mailkit.pop3")

T = TypeVar("T")

MECHANISMS = ("PLAIN", "LOGIN", "USER", "APOP", "XOAUTH2", "OAUTHBEARER")
_READ_SIZE = 256 * 1024
# Received bytes waiting for the core beyond this: the transport stops reading (as a StreamReader
# does at twice its limit), so a slow sink holds the server back instead of filling memory.
_QUEUE_HIGH = 2 * 1024 * 1024


class _Receiver(asyncio.BufferedProtocol):
    """Takes over receiving from the stream's StreamReader once the session is set up.

    TLS decrypts straight into one reused buffer and each arrival leaves it in a single copy;
    through the StreamReader, a 25 MB message was copied three times more (asyncio's SSL layer
    joining its records, the reader's buffer, the read) and every TLS record cost a 256 KB
    allocation. Everything but incoming data goes on to the stream's own protocol, so writing,
    ``drain()`` and ``close()`` work as before.
    """

    def __init__(self, stream: Stream) -> None:
        self._transport = stream.writer.transport
        self._inner = self._transport.get_protocol()
        self._view = memoryview(bytearray(_READ_SIZE))
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False

    def install(self, reader: asyncio.StreamReader) -> None:
        """Receive from now on; ``reader`` must hold no unread bytes (the caller took them)."""
        self._error = reader.exception()
        self._eof = reader.at_eof() or self._error is not None
        self._transport.set_protocol(self)

    # -- the transport's side ------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self._queue.append(bytes(self._view[:nbytes]))
        self._queued += nbytes
        if self._queued > _QUEUE_HIGH and not self._paused:
            self._paused = True
            self._transport.pause_reading()  # type: ignore[attr-defined]
        self._wake()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._wake()
        return self._inner.eof_received()  # type: ignore[attr-defined, no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._error = self._error or exc
        self._wake()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the client's side ---------------------------------------------------------------------

    async def read(self) -> bytes:
        """The next piece received (waiting for one; at most the buffer's size, as it came, not
        joined with the others: no extra copy); b"" at the end of the stream.

        Bytes that arrived before a connection error are returned first, then the error raised.
        """
        while not self._queue:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._queue.popleft()
        self._queued -= len(data)
        if self._paused and self._queued <= _QUEUE_HIGH // 2:
            self._paused = False
            self._transport.resume_reading()  # type: ignore[attr-defined]
        return data


class POP3Client:
    """One POP3 session: ``async with POP3Client(endpoint, ssl_context=ctx) as pop: ...``.

    The constructor does no I/O; ``connect()`` reads the greeting, asks CAPA and upgrades with
    STLS when the endpoint's security is STARTTLS. ``close()`` drops the connection without
    QUIT, so the server keeps every message (RFC 1939 deletes only after QUIT).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeouts: Timeouts | None = None,
        limits: Limits | None = None,
        allow_insecure: bool = False,
        pipelining: bool = True,
    ) -> None:
        if endpoint.security is Security.INSECURE and not allow_insecure:
            raise SecurityError(f"{endpoint.url} is plaintext; pass allow_insecure=True to permit it")
        if endpoint.security is not Security.INSECURE and ssl_context is None:
            raise ConfigError(f"{endpoint.url} needs an ssl_context")
        self.endpoint = endpoint
        self._ssl_context = ssl_context
        self.timeouts = timeouts or Timeouts()
        self._core = POP3Core(limits)
        self._stream: Stream | None = None
        self._receiver: _Receiver | None = None
        self._allow_pipelining = pipelining
        self.greeting = ""
        self.capabilities = Capabilities()
        self._closed = False
        self._authenticated = False
        # When the multi-line response being read started: its data timeout spans every chunk.
        self._body_started: float | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("open" if self._stream else "new")
        return f"<POP3Client {self.endpoint.url} {state}>"

    # -- session ------------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._stream is not None or self._closed:
            raise MailkitError("a POP3Client connects once; make a new one")
        self._stream = await open_stream(
            self.endpoint, self._ssl_context, connect_timeout=self.timeouts.connect
        )
        try:
            greeting = await self._response()
            if not greeting.ok:
                raise PermanentError("POP3 server refused the connection", reply=greeting.reply)
            self.greeting = greeting.text
            await self._capa_or_empty()
            if self.endpoint.security is Security.STARTTLS:
                await self._starttls()
            await self._take_over_receiving()
        except BaseException:
            await self.close()
            raise

    async def _take_over_receiving(self) -> None:
        # After STLS, never before: until then the StreamReader must still hold any injected
        # plaintext for start_tls to refuse it.
        stream = self._live()
        pending = pending_plaintext(stream.reader)
        if pending:
            self._core.receive_data(await stream.reader.read(pending))  # already here: no wait
        receiver = _Receiver(stream)
        receiver.install(stream.reader)
        self._receiver = receiver

    async def _capa_or_empty(self) -> None:
        response = await self.execute(Command("CAPA"), check=False)
        self.capabilities = parse_capa(response) if response.ok else Capabilities()

    async def _starttls(self) -> None:
        assert self._stream is not None and self._ssl_context is not None
        response = await self.execute(Command("STLS"), check=False)
        if not response.ok:
            raise SecurityError(
                f"{self.endpoint.url}: the server refused STLS; not continuing in plaintext",
                reply=response.reply,
            )
        if self._core.buffered:
            raise SecurityError(
                "the POP3 server sent data after agreeing to STLS and before the TLS handshake "
                "(possible response injection); connection dropped"
            )
        await start_tls(self._stream, self._ssl_context, timeout=self.timeouts.connect)
        # RFC 2595: forget everything learnt before TLS and ask again.
        await self._capa_or_empty()

    @property
    def pipelining(self) -> bool:
        return self._allow_pipelining and self.capabilities.pipelining

    async def login(self, credentials: Credentials, *, mechanism: str | None = None) -> None:
        """Authenticate with the strongest fitting method the server offers (or ``mechanism``)."""
        if self._authenticated:
            raise MailkitError("already authenticated")
        mech = (mechanism or self._choose_mechanism(credentials)).upper()
        if mech not in MECHANISMS:
            raise ConfigError(f"unknown POP3 login mechanism {mech!r}; one of {', '.join(MECHANISMS)}")
        if self.endpoint.security is Security.INSECURE:
            log.warning("sending POP3 credentials over plaintext to %s", self.endpoint.url)
        if isinstance(credentials, OAuth2):
            if mech not in ("XOAUTH2", "OAUTHBEARER"):
                raise ConfigError(f"OAuth2 credentials need XOAUTH2 or OAUTHBEARER, not {mech}")
            token = await credentials.token()
            if mech == "XOAUTH2":
                payload = _sasl.xoauth2(credentials.user, token)
            else:
                payload = _sasl.oauthbearer(credentials.user, token, self.endpoint.host, self.endpoint.port)
            response = await self._sasl(mech, _sasl.b64(payload))
        elif mech in ("XOAUTH2", "OAUTHBEARER"):
            raise ConfigError(f"{mech} needs oauth2 credentials")
        elif mech == "PLAIN":
            payload = _sasl.plain(credentials.user, credentials.password)
            response = await self._sasl("PLAIN", _sasl.b64(payload))
        elif mech == "LOGIN":
            response = await self._sasl_login(credentials)
        elif mech == "APOP":
            digest = apop_digest(self.greeting, credentials.password)
            if digest is None:
                raise AuthenticationError("the POP3 greeting has no APOP timestamp")
            response = await self.execute(Command("APOP", (credentials.user, digest)), check=False)
        else:
            response = await self.execute(Command("USER", (credentials.user,)), check=False)
            if response.ok:
                response = await self.execute(Command("PASS", (credentials.password,)), check=False)
        if not response.ok:
            raise AuthenticationError(
                f"POP3 server refused the credentials of {credentials.user!r} ({mech})",
                reply=response.reply,
            )
        self._authenticated = True
        # Some servers list more capabilities (PIPELINING, UIDL) once logged in.
        await self._capa_or_empty()

    def _choose_mechanism(self, credentials: Credentials) -> str:
        sasl = self.capabilities.sasl
        if isinstance(credentials, OAuth2):
            # Neither listed: XOAUTH2, which servers that leave SASL out of CAPA tend to take.
            return _sasl.choose_oauth(sasl) or "XOAUTH2"
        if "PLAIN" in sasl:
            return "PLAIN"
        if "USER" in self.capabilities or not sasl:
            return "USER"
        if "LOGIN" in sasl:
            return "LOGIN"
        return "USER"

    async def _sasl(self, mech: str, initial: str) -> Response:
        # RFC 5034 allows an initial response; a server that still challenges is sending an
        # error (XOAUTH2/OAUTHBEARER send a JSON status as a challenge) and waits for the answer
        # that ends the exchange: %x01 for OAUTHBEARER (RFC 7628), empty otherwise. A server
        # that keeps challenging gets "*" (cancel) instead of an endless exchange.
        event = await self._event(Command("AUTH", (mech, initial)))
        answers = iter((_sasl.b64(_sasl.oauth_error_answer(mech)), "*"))
        while isinstance(event, Continuation):
            answer = next(answers, None)
            if answer is None:
                raise ProtocolError(f"the POP3 server does not end the {mech} exchange")
            event = await self._event(Command.continuation(answer))
        return event

    async def _sasl_login(self, credentials: Password) -> Response:
        event = await self._event(Command("AUTH", ("LOGIN",)))
        rounds = 0
        while isinstance(event, Continuation):
            rounds += 1
            if rounds > 3:
                answer = "*"  # cancel an exchange that does not end
            else:
                answer = sasl_login(credentials.user, credentials.password, event.challenge)
            event = await self._event(Command.continuation(answer))
        return event

    async def _event(self, command: Command) -> Response | Continuation:
        """Send a command (or SASL continuation) and return its first answer."""
        self._write([command])
        event = await self._next(allow_continuation=True)
        assert not isinstance(event, BodyChunk)  # AUTH is never streamed
        return event

    # -- commands ------------------------------------------------------------------------------

    async def execute(self, command: Command, *, check: bool = True) -> Response:
        """Send one command and return its response; ``check`` turns -ERR into CommandError."""
        self._write([command])
        response = await self._response()
        if check:
            _check(response)
        return response

    async def execute_many(self, commands: Sequence[Command], *, check: bool = True) -> list[Response]:
        """Run commands in order: in one write when pipelining, else one at a time."""
        if not self.pipelining:
            return [await self.execute(c, check=check) for c in commands]
        self._write(commands)
        responses = [await self._response() for _ in commands]
        if check:
            for response in responses:
                _check(response)
        return responses

    async def stat(self) -> tuple[int, int]:
        """(number of messages, total size in octets)."""
        return await self._parse(parse_stat, Command("STAT"))

    async def list(self) -> dict[int, int]:
        """{message number: size}."""
        return await self._parse(parse_scan_listing, Command("LIST"))

    async def uidl(self) -> dict[int, str]:
        """{message number: unique id}."""
        return await self._parse(parse_uidl_listing, Command("UIDL"))

    async def _parse(self, parse: Callable[[Response], T], command: Command) -> T:
        response = await self.execute(command)
        try:
            return parse(response)
        except ProtocolError:
            await self.close()  # a peer that breaks the protocol once is not trusted further
            raise

    async def retr(self, number: int) -> bytes:
        """The whole message, byte for byte as stored (dot-unstuffed)."""
        response = await self.execute(Command("RETR", (_number(number),)))
        assert response.body is not None
        return response.body

    async def top(self, number: int, lines: int = 0) -> bytes:
        """The header and the first ``lines`` lines of the body."""
        if lines < 0:
            raise ConfigError("TOP needs a line count of 0 or more")
        response = await self.execute(Command("TOP", (_number(number), str(lines))))
        assert response.body is not None
        return response.body

    async def retr_many(
        self, numbers: Iterable[int], *, window: int = 64
    ) -> AsyncIterator[tuple[int, Response]]:
        """RETR each number, pipelined up to ``window`` commands ahead; yields (number, response).

        A -ERR for one message is yielded, not raised: the others still arrive.
        """
        limit = window if self.pipelining else 1
        todo = iter(numbers)
        in_flight: deque[int] = deque()
        done = False
        while True:
            batch: list[Command] = []
            # Refill once half the window has drained: commands leave in few large writes.
            if len(in_flight) <= limit // 2:
                while not done and len(in_flight) < limit:
                    n = next(todo, None)
                    if n is None:
                        done = True
                        break
                    in_flight.append(n)
                    batch.append(Command("RETR", (_number(n),)))
            if batch:
                self._write(batch)
            if not in_flight:
                return
            response = await self._response()
            yield in_flight.popleft(), response

    async def dele(self, number: int) -> None:
        await self.execute(Command("DELE", (_number(number),)))

    async def rset(self) -> None:
        await self.execute(Command("RSET"))

    async def noop(self) -> None:
        await self.execute(Command("NOOP"))

    async def quit(self) -> None:
        """End the session; the server commits the deletions (UPDATE state) before +OK."""
        try:
            await self.execute(Command("QUIT"))
        finally:
            await self.close()

    async def close(self) -> None:
        """Drop the connection without QUIT (the server deletes nothing). Never raises."""
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close(timeout=self.timeouts.command)

    async def __aenter__(self) -> POP3Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None and self._stream is not None:
            await self.quit()
        else:
            await self.close()

    # -- low level -----------------------------------------------------------------------------

    def send(self, commands: Sequence[Command]) -> None:
        """Queue commands without waiting (pipelining); read their answers with ``response()``."""
        self._write(commands)

    async def response(self) -> Response:
        """The next response, in the order the commands were sent."""
        return await self._response()

    async def events(self) -> builtins.list[Response | BodyChunk]:
        """Every response that can be parsed now, in order (waiting for at least one).

        Commands sent with ``stream=True`` give their body as ``BodyChunk`` events first, then a
        ``Response`` with ``body=None``. Reading in bulk costs one await for many responses.
        """
        first = await self._next(allow_continuation=False)
        assert not isinstance(first, Continuation)
        out: builtins.list[Response | BodyChunk] = [first]
        core = self._core
        debug = log.isEnabledFor(logging.DEBUG)
        try:
            while True:
                event = core.next_event()
                if event is NEED_DATA:
                    break
                if isinstance(event, Response):
                    self._body_started = None
                elif not isinstance(event, BodyChunk):
                    raise ProtocolError("POP3 server sent a SASL challenge outside AUTH")
                if debug:
                    self._log_event(event)
                out.append(event)
        except MailkitError:
            await self.close()
            raise
        return out

    @property
    def pending(self) -> int:
        return self._core.pending

    def _write(self, commands: Sequence[Command]) -> None:
        stream = self._live()
        data = self._core.send_many(commands)
        if log.isEnabledFor(logging.DEBUG):
            for c in commands:
                log_sent(log, str(c) if c.secret else c.line(), secret=c.raw is not None)
        try:
            stream.writer.write(data)
        except (OSError, RuntimeError) as exc:
            raise ConnectionLost(f"POP3 connection to {self.endpoint.host} lost while writing") from exc

    def _live(self) -> Stream:
        if self._stream is None:
            raise ConnectionLost("the POP3 connection is closed")
        return self._stream

    async def _response(self) -> Response:
        event = await self._next(allow_continuation=False)
        if not isinstance(event, Response):
            await self.close()
            raise MailkitError("a streamed response is read with events(), not response()")
        return event

    async def _next(self, *, allow_continuation: bool) -> Response | Continuation | BodyChunk:
        """The next event, within deadlines: the status line within the command timeout, the
        whole response within the data timeout (a server dripping bytes cannot hold us; a
        streamed body's chunks share one deadline)."""
        core = self._core
        loop = asyncio.get_running_loop()
        started = self._body_started if self._body_started is not None else loop.time()
        try:
            while True:
                event = core.next_event()
                if event is NEED_DATA:
                    limit = self.timeouts.data if core.in_body else self.timeouts.command
                    await self._read(None if limit is None else started + limit)
                    continue
                if isinstance(event, Continuation) and not allow_continuation:
                    raise ProtocolError("POP3 server sent a SASL challenge outside AUTH")
                assert isinstance(event, (Response, Continuation, BodyChunk))
                self._body_started = started if isinstance(event, BodyChunk) else None
                self._log_event(event)
                return event
        except MailkitError:
            await self.close()
            raise

    async def _read(self, deadline: float | None) -> None:
        stream = self._live()
        try:
            # Draining here keeps the write side flowing too (pipelined commands can be long).
            if stream.writer.transport.get_write_buffer_size():
                async with asyncio.timeout_at(deadline):
                    await stream.writer.drain()
            async with asyncio.timeout_at(deadline):
                if self._receiver is not None:
                    data = await self._receiver.read()
                else:
                    data = await stream.reader.read(_READ_SIZE)
        except (OSError, EOFError, ssl.SSLError, builtins.TimeoutError) as exc:
            await self.close()
            raise _translate(exc, self.endpoint) from exc
        except asyncio.CancelledError:
            await self.close()
            raise
        if not data:
            self._core.receive_eof()
            await self.close()
        else:
            self._core.receive_data(data)

    def _log_event(self, event: Response | Continuation | BodyChunk) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        if isinstance(event, BodyChunk):
            log.debug("S: [%d more bytes of the response to %s]", len(event.data), event.command)
        elif isinstance(event, Continuation):
            log.debug("S: + <challenge>")
        else:
            body = "" if event.body is None else f" [{len(event.body)} bytes]"
            log.debug("S: %s %s%s", "+OK" if event.ok else "-ERR", event.text, body)


def _translate(exc: BaseException, endpoint: Endpoint) -> MailkitError:
    where = f"POP3 {endpoint.host}:{endpoint.port}"
    if isinstance(exc, builtins.TimeoutError) and not isinstance(exc, MailkitError):
        return TimeoutError(f"{where}: no response in time")
    return translate_os_error(exc, where)


# RFC 2449 / 3206 response codes that mean "try again later".
_TRANSIENT_CODES = ("[IN-USE]", "[SYS/TEMP]", "[LOGIN-DELAY]")


def _check(response: Response) -> None:
    if not response.ok:
        what = response.command or "the connection"
        transient = response.text.upper().startswith(_TRANSIENT_CODES)
        cls = TransientError if transient else PermanentError
        raise cls(f"POP3 server refused {what}", reply=response.reply)


def _number(n: int) -> str:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"POP3 message numbers start at 1, not {n!r}")
    return str(n)
