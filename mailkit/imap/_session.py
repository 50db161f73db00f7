"""The blocking IMAP session: imapclient for commands and state, ``_wire`` for bulk FETCH and SEARCH.

Rule: every method here runs on the connection's own worker thread (see ``client.py``); every
imapclient/imaplib/socket error leaves as a MailkitError (``_translated``); every name or string
that reaches a command line is checked or sent as a literal; the socket always has a timeout.
"""

from __future__ import annotations

import contextlib
import functools
import imaplib
import io
import itertools
import logging
import operator
import os
import re
import socket
import ssl
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, TypeVar

from imapclient import IMAPClient, SocketTimeout
from imapclient import exceptions as imap_errors

from .. import _sasl
from .._log import IMAPCLIENT_LOGGERS, guard_logger, log_received, log_sent
from ..config import Endpoint, OAuth2, Password, Security, check_line_safe
from ..errors import (
    AuthenticationError,
    CommandError,
    ConfigError,
    ConnectionLost,
    MailkitError,
    PermanentError,
    ProtocolError,
    Reply,
    SecurityError,
    TimeoutError,
    translate_os_error,
)
from . import _wire
from ._guarded import GuardedIMAPClient
from ._types import FALLBACK_NAMES, Folder, FolderStatus, Mailbox, Message, SpecialUse
from .query import Q, check_flag

__all__ = ["FetchSpec", "Session"]

log = logging.getLogger("mailkit.imap")
for _name in IMAPCLIENT_LOGGERS:
    guard_logger(_name)

T = TypeVar("T")

# A batch goes out as several pipelined UID FETCHes of this many messages, so the server works on
# the next while this side parses the last (bodies: smaller, each reply is held until parsed).
PIPELINE_LISTING = 250
PIPELINE_DATA = 100

_SYSTEM_FLAGS = {f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")}


def _reply_from(exc: BaseException) -> Reply:
    text = str(exc)
    # imapclient/imaplib say "<command> failed: <server text>"
    _, sep, server = text.partition(" failed: ")
    return Reply("imap", "NO", server if sep else text)


def _translate(exc: BaseException, where: str) -> MailkitError:
    """imapclient/imaplib/socket/ssl errors -> MailkitError, most specific first."""
    if isinstance(exc, MailkitError):
        return exc
    if isinstance(exc, imap_errors.LoginError):
        return AuthenticationError(f"{where}: login refused", reply=_reply_from(exc))
    if isinstance(exc, imap_errors.CapabilityError):
        return PermanentError(f"{where}: the server lacks a needed capability ({exc})")
    if isinstance(exc, (imaplib.IMAP4.abort, imap_errors.IMAPClientAbortError)):
        text = str(exc)
        if "EOF" in text or "socket error" in text:
            return ConnectionLost(f"{where}: connection closed by the server")
        return ProtocolError(f"{where}: {text}")
    if isinstance(exc, imap_errors.IMAPClientReadOnlyError):
        return PermanentError(f"{where}: the mailbox is open read-only")
    if isinstance(exc, (imaplib.IMAP4.error, imap_errors.IMAPClientError)):
        reply = _reply_from(exc)
        return PermanentError(f"{where} refused", reply=reply)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return TimeoutError(f"{where}: timed out")
    if isinstance(exc, (OSError, EOFError, ssl.SSLError)):
        return translate_os_error(exc, where)
    if isinstance(exc, (ValueError, IndexError, KeyError, AssertionError, UnicodeError)):
        return ProtocolError(f"{where}: unexpected response ({exc.__class__.__name__}: {exc})")
    return ProtocolError(f"{where}: {exc.__class__.__name__}: {exc}")


@contextlib.contextmanager
def _translated(where: str) -> Iterator[None]:
    try:
        yield
    except MailkitError:
        raise
    except Exception as exc:
        raise _translate(exc, where) from exc


def check_mailbox_name(name: str) -> str:
    """Folder names go on the command line (quoted, modified UTF-7): no CR, LF or NUL."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"mailbox name must be a non-empty string, not {name!r}")
    check_line_safe(name, "mailbox name")
    return name


def _s(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _nstr(value: Any) -> str | None:
    return None if value is None else _s(value)


def _flags(values: Iterable[Any]) -> tuple[str, ...]:
    return tuple(_s(v) for v in values)


def _norm_flags(flags: Iterable[str] | str) -> list[str]:
    if isinstance(flags, str):
        flags = [flags]
    out = []
    for flag in flags:
        check_flag(flag)
        out.append(_SYSTEM_FLAGS.get(flag.lower(), flag))
    return out


def _internal_date(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.strptime(_s(value).strip(), "%d-%b-%Y %H:%M:%S %z")
    except ValueError:
        return None


@dataclass(frozen=True)
class FetchSpec:
    """What to fetch per message. ``part`` is a section like ``"1.2"``; ``body`` the whole message."""

    flags: bool = True
    size: bool = True
    envelope: bool = False
    headers: bool = False
    bodystructure: bool = False
    body: bool = False
    part: str | None = None
    internal_date: bool = False
    modseq: bool = False

    def __post_init__(self) -> None:
        if self.part is not None and not all(p.isdigit() for p in self.part.split(".")):
            raise ConfigError(f"part must look like '1' or '1.2', not {self.part!r}")

    @property
    def wants_data(self) -> bool:
        return self.body or self.part is not None

    def items(self) -> bytes:
        names = [b"UID"]
        if self.flags:
            names.append(b"FLAGS")
        if self.size:
            names.append(b"RFC822.SIZE")
        if self.internal_date:
            names.append(b"INTERNALDATE")
        if self.envelope:
            names.append(b"ENVELOPE")
        if self.bodystructure:
            names.append(b"BODYSTRUCTURE")
        if self.modseq:
            names.append(b"MODSEQ")
        if self.headers:
            names.append(b"BODY.PEEK[HEADER]")
        if self.body:
            names.append(b"BODY.PEEK[]")
        if self.part is not None:
            names.append(b"BODY.PEEK[%s]" % self.part.encode("ascii"))
        return b"(" + b" ".join(names) + b")"


def message_from_items(items: dict[str, Any], spec: FetchSpec) -> Message:
    get = items.get
    flags = get("FLAGS")
    if flags is not None:
        flags = tuple(flags) if not flags or type(flags[0]) is str else _flags(flags)
    size = get("RFC822.SIZE")
    modseq = get("MODSEQ")
    date = get("INTERNALDATE")
    data: Any = None
    if spec.body:
        data = get("BODY[]")
    elif spec.part is not None:
        data = get(f"BODY[{spec.part}]")
    body_path = None
    if type(data) is not _wire.Literal and data is not None:  # a literal is bytes already: no copy
        if isinstance(data, _wire.Spooled):
            body_path, data = data.path, None
        else:
            data = _as_bytes(data)
    # positional: Message's field order (uid, flags, size, internal_date, raw_envelope, headers,
    # body, body_path, bodystructure, modseq); built without ten frozen setattrs
    return Message._of_fields(
        int(items["UID"]),
        flags,
        None if size is None else int(size),
        None if date is None else _internal_date(date),
        get("ENVELOPE"),
        None if (headers := get("BODY[HEADER]")) is None else _as_bytes(headers),
        data,
        body_path,
        get("BODYSTRUCTURE"),
        int(modseq[0]) if isinstance(modseq, list) and modseq else None,
    )


def _as_bytes(value: Any) -> bytes | None:
    """A literal (bytes) or a quoted string (str, from the bulk parser) as the bytes sent."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return value if isinstance(value, bytes) else bytes(value)  # a Literal is bytes: no copy


class Session:
    """One authenticated IMAP connection. Not thread-safe: one worker thread drives it."""

    def __init__(
        self,
        endpoint: Endpoint,
        credentials: Password | OAuth2 | None,
        login_user: str,
        ssl_context: ssl.SSLContext | None,
        *,
        connect_timeout: float | None,
        command_timeout: float | None,
        token: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._credentials = credentials
        self._user = login_user
        self._ssl_context = ssl_context
        self._timeouts = SocketTimeout(connect_timeout, command_timeout)
        self._token = token
        self._client: IMAPClient | None = None
        # The socket as soon as it exists, before IMAPClient() returns: a greeting or handshake
        # that never finishes can then be cut from the event loop's side.
        self._socket: socket.socket | None = None
        self._caps: frozenset[str] = frozenset()
        self.selected: Mailbox | None = None
        self.broken = False

    # --- connection -------------------------------------------------------------------------
    @property
    def client(self) -> IMAPClient:
        if self._client is None or self.broken:
            raise ConnectionLost("the IMAP connection is closed")
        if self._ahead is not None and self._ahead.tags:
            self._settle()  # a fetch batch sent ahead is still arriving: read it first
        return self._client

    def connect(self) -> None:
        ep = self.endpoint
        where = f"IMAP {ep.host}:{ep.port}"
        try:
            with _translated(where):
                client = GuardedIMAPClient(
                    ep.host,
                    ep.port,
                    ssl_context=self._ssl_context if ep.security is Security.TLS else None,
                    timeout=self._timeouts,
                    on_socket=self._set_socket,
                )
                self._client = client
                if ep.security is Security.STARTTLS:
                    self._starttls(client)
                self._authenticate(client)
                self._caps = frozenset(_s(c).upper() for c in client.capabilities())
                if "QRESYNC" in self._caps:
                    client.enable("QRESYNC")
                elif "CONDSTORE" in self._caps and "ENABLE" in self._caps:
                    client.enable("CONDSTORE")
        except BaseException:
            self.shutdown()
            raise

    def _set_socket(self, sock: socket.socket) -> None:
        self._socket = sock
        if self.broken:  # shut down while we were still connecting
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _starttls(self, client: IMAPClient) -> None:
        caps = {_s(c).upper() for c in client.capabilities()}
        if "STARTTLS" not in caps:
            raise SecurityError(f"{self.endpoint.url}: the server does not offer STARTTLS")
        try:
            client.starttls(self._ssl_context)
        except (ssl.SSLError, imap_errors.IMAPClientError, imaplib.IMAP4.error) as exc:
            err = _translate(exc, "STARTTLS")
            if isinstance(err, PermanentError):
                raise SecurityError(f"{self.endpoint.url}: STARTTLS failed: {exc}") from exc
            raise err from exc

    def _authenticate(self, client: IMAPClient) -> None:
        creds = self._credentials
        if creds is None:
            raise AuthenticationError("no IMAP credentials: pass password= or oauth2=")
        caps = {_s(c).upper() for c in client.capabilities()}
        log_sent(log, f"AUTHENTICATE as {self._user}")
        if isinstance(creds, OAuth2):
            offered = {c.removeprefix("AUTH=") for c in caps if c.startswith("AUTH=")}
            mechanism = _sasl.choose_oauth(offered)
            if mechanism is None:
                raise AuthenticationError("the IMAP server offers neither OAUTHBEARER nor XOAUTH2")
            self._oauth2_login(client, mechanism, self._token or "")
            return
        if "AUTH=PLAIN" in caps:
            try:
                client.plain_login(self._user, creds.password)
            except (imap_errors.IMAPClientError, imaplib.IMAP4.error) as exc:
                if isinstance(exc, imaplib.IMAP4.abort):
                    raise
                raise AuthenticationError("IMAP login refused", reply=_reply_from(exc)) from None
            return
        if "LOGINDISABLED" in caps:
            raise AuthenticationError("the IMAP server disables LOGIN and offers no AUTH=PLAIN")
        if not (self._user + creds.password).isascii():
            raise AuthenticationError(
                "a non-ASCII user name or password needs AUTHENTICATE PLAIN, which the server lacks"
            )
        try:
            client.login(self._user, creds.password)
        except imap_errors.LoginError as exc:
            raise AuthenticationError("IMAP login refused", reply=_reply_from(exc)) from None

    def _oauth2_login(self, client: IMAPClient, mechanism: str, token: str) -> None:
        # Not imapclient's oauth2_login/oauthbearer_login: they answer the server's error challenge
        # (a JSON status, RFC 7628 3.2.2) with the token again. The answer must be %x01 for
        # OAUTHBEARER and empty for XOAUTH2; the server then ends the exchange with NO.
        if mechanism == "OAUTHBEARER":
            first = _sasl.oauthbearer(self._user, token, self.endpoint.host, self.endpoint.port)
        else:
            first = _sasl.xoauth2(self._user, token)
        answers = iter((first, _sasl.oauth_error_answer(mechanism)))

        def respond(_challenge: bytes) -> bytes | None:
            return next(answers, None)  # None: imaplib cancels ("*") a server that keeps asking

        try:
            client._imap.authenticate(mechanism, respond)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            raise AuthenticationError(f"IMAP {mechanism} login refused", reply=_reply_from(exc)) from None

    def has(self, capability: str) -> bool:
        return capability.upper() in self._caps

    @property
    def capabilities(self) -> frozenset[str]:
        return self._caps

    def logout(self) -> None:
        if self._client is None:
            return
        try:
            if not self.broken:
                with contextlib.suppress(Exception):  # closing: the server may be gone already
                    self._client.logout()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Close the socket now (also unblocks a thread stuck reading it)."""
        client, self._client = self._client, None
        self.broken = True
        pending, self._socket = self._socket, None
        if pending is not None:
            with contextlib.suppress(OSError):
                pending.shutdown(socket.SHUT_RDWR)
        if client is not None:
            with contextlib.suppress(Exception):
                client.socket().shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(Exception):
                client.shutdown()

    def _run(self, where: str, fn: Callable[[], T]) -> T:
        try:
            with _translated(where):
                return fn()
        except (ConnectionLost, ProtocolError, TimeoutError):
            # After these the connection's state is unknown: never reuse it.
            self.shutdown()
            raise

    # --- folders ----------------------------------------------------------------------------
    def folders(self, pattern: str = "*") -> list[Folder]:
        check_line_safe(pattern, "pattern")
        rows = self._run("LIST", lambda: self.client.list_folders("", pattern))
        return [Folder(_s(name), _nstr(delim), _flags(flags)) for flags, delim, name in rows]

    def find_folder(self, role: SpecialUse | str) -> Folder | None:
        role = SpecialUse(role) if not isinstance(role, SpecialUse) else role
        folders = self.folders()
        for folder in folders:
            if folder.special_use is role:
                return folder
        names = {n.lower() for n in FALLBACK_NAMES.get(role, ())}
        for folder in folders:
            leaf = folder.name.rsplit(folder.delimiter, 1)[-1] if folder.delimiter else folder.name
            if leaf.lower() in names and folder.selectable:
                return folder
        return None

    def create_folder(self, name: str) -> None:
        check_mailbox_name(name)
        self._run(f"CREATE {name!r}", lambda: self.client.create_folder(name))

    def rename_folder(self, old: str, new: str) -> None:
        check_mailbox_name(old)
        check_mailbox_name(new)
        self._run(f"RENAME {old!r}", lambda: self.client.rename_folder(old, new))

    def delete_folder(self, name: str) -> None:
        check_mailbox_name(name)
        if self.selected is not None and self.selected.name == name:
            self.unselect()
        self._run(f"DELETE {name!r}", lambda: self.client.delete_folder(name))

    def subscribe(self, name: str, subscribed: bool = True) -> None:
        check_mailbox_name(name)
        if subscribed:
            self._run(f"SUBSCRIBE {name!r}", lambda: self.client.subscribe_folder(name))
        else:
            self._run(f"UNSUBSCRIBE {name!r}", lambda: self.client.unsubscribe_folder(name))

    def subscribed(self) -> list[Folder]:
        rows = self._run("LSUB", lambda: self.client.list_sub_folders())
        return [Folder(_s(name), _nstr(delim), _flags(flags)) for flags, delim, name in rows]

    def status(self, name: str, items: Sequence[str] | None = None) -> FolderStatus:
        """STATUS of ``name`` (``items``: the STATUS items to ask; default all that we know)."""
        check_mailbox_name(name)
        if items is not None:
            what = list(items)
        else:
            what = ["MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN"]
            if self.has("CONDSTORE"):
                what.append("HIGHESTMODSEQ")
        data = self._run(f"STATUS {name!r}", lambda: self.client.folder_status(name, what))
        values = {_s(k).upper(): int(v) for k, v in data.items()}
        return FolderStatus(
            name=name,
            messages=values.get("MESSAGES"),
            recent=values.get("RECENT"),
            uidnext=values.get("UIDNEXT"),
            uidvalidity=values.get("UIDVALIDITY"),
            unseen=values.get("UNSEEN"),
            highestmodseq=values.get("HIGHESTMODSEQ"),
        )

    # --- selection --------------------------------------------------------------------------
    def select(self, name: str, *, readonly: bool = False) -> Mailbox:
        check_mailbox_name(name)
        data = self._run(f"SELECT {name!r}", lambda: self.client.select_folder(name, readonly=readonly))
        values = {_s(k).upper(): v for k, v in data.items()}
        if "UIDVALIDITY" not in values:
            raise ProtocolError(f"SELECT {name!r}: the server sent no UIDVALIDITY")
        modseq = values.get("HIGHESTMODSEQ")
        if "NOMODSEQ" in values:
            modseq = None
        self.selected = Mailbox(
            name=name,
            exists=int(values.get("EXISTS", 0)),
            uidvalidity=int(values["UIDVALIDITY"]),
            uidnext=None if values.get("UIDNEXT") is None else int(values["UIDNEXT"]),
            highestmodseq=None if modseq is None else int(modseq),
            flags=_flags(values.get("FLAGS", ())),
            permanent_flags=_flags(values.get("PERMANENTFLAGS", ())),
            read_only="READ-ONLY" in values or readonly,
        )
        return self.selected

    def unselect(self) -> None:
        if self.selected is None:
            return
        if self.has("UNSELECT"):
            self._run("UNSELECT", lambda: self.client.unselect_folder())
        else:
            # CLOSE would expunge \Deleted messages; EXAMINE of a mailbox leaves it harmlessly.
            self._run("EXAMINE", lambda: self.client.select_folder(self.selected.name, True))  # type: ignore[union-attr]
        self.selected = None

    def _require_selected(self) -> Mailbox:
        if self.selected is None:
            raise ConfigError("no mailbox selected: call select(NAME) first")
        return self.selected

    # --- raw wire commands (bulk paths) -----------------------------------------------------
    def raw_command(
        self,
        segments: list[bytes],
        what: str,
        on_untagged: Callable[[bytes, bytes, list[Any]], None],
        *,
        spool: _wire.Spool | None = None,
        spool_over: int = 8 << 20,
        fetch_responses: list[list[bytes | _wire.Literal | _wire.Spooled]] | None = None,
    ) -> None:
        """Send one command on the imaplib socket and read its responses up to our tag.

        FETCH responses go unparsed into ``fetch_responses`` when given (parsed later in bulk).
        """
        on_batch = None if fetch_responses is None else fetch_responses.extend
        self._exchange([segments], what, on_untagged, spool=spool, spool_over=spool_over, on_batch=on_batch)

    def _exchange(
        self,
        commands: list[list[bytes]],
        what: str,
        on_untagged: Callable[[bytes, bytes, list[Any]], None],
        *,
        spool: _wire.Spool | None,
        spool_over: int,
        on_batch: Callable[[list[list[bytes | _wire.Literal | _wire.Spooled]]], None] | None,
        on_block: Callable[[bytes], None] | None = None,
    ) -> None:
        """Send ``commands`` (several at once: pipelined) and read until every one is answered.

        FETCH responses gathered so far go to ``on_batch`` at each tagged reply, so they are
        parsed while the server is already producing the next command's; runs of literal-free
        FETCH lines go to ``on_block`` as whole blocks as soon as they arrive. A NO/BAD for one
        command is raised after all of them were answered: the stream stays in step.
        """
        self._require_selected()
        imap = self.client._imap
        if isinstance(imap.file, _wire.Prefixed) and not imap.file.pending:
            imap.file = imap.file.file
        reader = _wire.BulkReader(imap.file)
        limit = spool_over if spool is not None else _wire.MAX_MEMORY_LITERAL

        def run() -> None:
            tags = [_wire.new_tag() for _ in commands]
            for tag, segments in zip(tags, commands, strict=True):
                shown = b"".join(s if not isinstance(s, _wire.Literal) else b"{..}" for s in segments)
                log_sent(log, tag + b" " + shown)
            if len(commands) == 1:
                _wire.send_command(imap, reader, tags[0], commands[0], literal_plus=self.has("LITERAL+"))
            else:
                imap.send(_wire.pipelined(tags, commands))
            failed: CommandError | None = None
            # A server may run pipelined commands at once: their responses can interleave and
            # their tagged replies come in any order. FETCH responses are gathered whichever
            # command they answer (the caller wants them all) and parsed at each tagged reply.
            pending = set(tags)
            batch: list[list[bytes | _wire.Literal | _wire.Spooled]] = []
            blocks = on_block is not None
            while pending:
                if blocks:
                    block = reader.fetch_block()
                    if block:
                        on_block(block)  # type: ignore[misc]
                        continue
                elif on_batch is not None:
                    whole = reader.literal_block(limit)
                    if whole:
                        batch.extend(whole)
                        continue
                parts = reader.response(spool=spool, spool_over=spool_over)
                # after a literal more are likely (bodies): look for blocks again only once a
                # literal-free response came
                blocks = on_block is not None and len(parts) == 1
                first = parts[0]
                assert isinstance(first, bytes)
                tag = first.split(b" ", 1)[0]
                if tag in pending:
                    log_received(log, first)
                    pending.discard(tag)
                    try:
                        _wire.tagged_status(first, tag, what)
                    except CommandError as exc:  # NO/BAD (final or "try later"): the stream is in step
                        failed = failed or exc
                    if on_batch is not None and failed is None and batch:
                        on_batch(batch)
                    batch = []
                    continue
                if on_batch is not None and b" FETCH (" in first[:40]:
                    batch.append(parts)
                    continue
                if first.startswith(b"* "):
                    number, name, rest = _wire.untagged(parts)
                    if name == b"BYE":
                        raise ConnectionLost(f"{what}: the server said BYE: {_s(first[6:]).strip()}")
                    on_untagged(number, name, rest)
                elif first.startswith(b"+"):
                    raise ProtocolError(f"{what}: unexpected continuation request")
                else:
                    raise ProtocolError(f"{what}: unexpected line {first[:60]!r}")
            if failed is not None:
                raise failed

        try:
            self._run(what, run)
        except CommandError:
            self._give_back(imap, reader)
            raise
        except MailkitError:
            self.shutdown()
            raise
        except BaseException:
            self.shutdown()  # interrupted mid-response: the stream position is unknown
            raise
        self._give_back(imap, reader)

    @staticmethod
    def _give_back(imap: Any, reader: _wire.BulkReader) -> None:
        """Bytes read past our last tagged reply belong to imaplib's next read: put them back."""
        leftover = reader.leftover()
        if leftover:
            imap.file = _wire.Prefixed(leftover, imap.file)

    def uid_fetch(
        self,
        uid_set: bytes,
        items: bytes,
        *,
        modifiers: bytes = b"",
        spool: _wire.Spool | None = None,
        spool_over: int = 8 << 20,
        on_vanished: Callable[[list[int]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """``UID FETCH uid_set items [modifiers]`` -> the FETCH item dicts that carry a UID."""
        return self.uid_fetch_many(
            [uid_set], items, modifiers=modifiers, spool=spool, spool_over=spool_over, on_vanished=on_vanished
        )

    def uid_fetch_many(
        self,
        uid_sets: list[bytes],
        items: bytes,
        *,
        modifiers: bytes = b"",
        spool: _wire.Spool | None = None,
        spool_over: int = 8 << 20,
        on_vanished: Callable[[list[int]], None] | None = None,
        convert: Callable[[dict[str, Any]], Any] | None = None,
        block_rows: Callable[[bytes], list[Any] | None] | None = None,
    ) -> list[Any]:
        """One pipelined ``UID FETCH`` per UID set; each reply parsed (and turned into what
        ``convert`` makes of a row) while the server is already sending the next.

        ``block_rows`` may turn a block of literal-free lines straight into converted rows (a
        specialised reader for one reply shape); when it returns None the general parser runs.
        """
        rows: list[Any] = []

        def handle(number: bytes, name: bytes, rest: list[Any]) -> None:
            if name == b"VANISHED" and on_vanished is not None:
                earlier = bool(rest) and isinstance(rest[0], list)
                uids = rest[1] if earlier and len(rest) > 1 else (rest[0] if not earlier else None)
                if isinstance(uids, bytes):
                    on_vanished(_wire.parse_sequence_set(uids))

        def parse(responses: list[list[bytes | _wire.Literal | _wire.Spooled]] | bytes) -> None:
            try:
                if isinstance(responses, bytes):
                    direct = None if block_rows is None else block_rows(responses)
                    if direct is not None:
                        rows.extend(direct)
                        return
                    parsed = _wire.parse_fetch_block(responses)
                else:
                    parsed = _wire.parse_fetch_batch(responses)
            except (ValueError, TypeError, RecursionError, ProtocolError) as exc:
                # a server that sends garbage is not trusted with the next command
                raise ProtocolError(f"UID FETCH: malformed response ({exc})") from None
            if convert is None:
                rows.extend(row for row in parsed if "UID" in row)
            else:
                rows.extend(convert(row) for row in parsed if "UID" in row)

        commands = _fetch_commands(uid_sets, items, modifiers)
        self._exchange(
            commands, "UID FETCH", handle, spool=spool, spool_over=spool_over, on_batch=parse, on_block=parse
        )
        return rows

    # --- search -----------------------------------------------------------------------------
    def search(self, query: Q | str | None = None) -> list[int]:
        """UIDs matching ``query`` (a ``Q``, or IMAP syntax as text; default: all)."""
        q = Q.all() if query is None else (Q.raw(query) if isinstance(query, str) else query)
        found: list[int] = []

        def handle(number: bytes, name: bytes, rest: list[Any]) -> None:
            if name == b"SEARCH":
                found.extend(int(t) for t in rest if isinstance(t, bytes) and t.isdigit())
            elif name == b"ESEARCH":
                for key, value in itertools.pairwise(rest):
                    if isinstance(key, bytes) and key.upper() == b"ALL" and isinstance(value, bytes):
                        found.extend(_wire.parse_sequence_set(value))

        self.raw_command([b"UID SEARCH ", *q.segments()], "UID SEARCH", handle)
        return sorted(set(found))

    # --- fetch ------------------------------------------------------------------------------
    # A batch's commands may go out before the batch is asked for (``fetch(..., then=...)``): the
    # server then works on the next batch while this one is handed over. While such a batch is in
    # flight our reader owns the stream; anything else that needs the connection first reads that
    # batch to its end (``_settle``, from ``client``), and its messages wait for ``fetch``.
    _ahead: _Batch | None = None
    _reader: _wire.BulkReader | None = None

    def fetch(
        self,
        uids: Iterable[int],
        spec: FetchSpec,
        *,
        spool_dir: str | None = None,
        stream_over: int = 8 << 20,
        then: Iterable[int] | None = None,
    ) -> list[Message]:
        """One batch: the caller (``client.py``) sizes batches by count and bytes.

        ``then``: the UIDs of the batch the caller asks for next. Its commands are sent before
        this batch is read, so there is no round trip between batches (one batch ahead at most:
        the socket buffers hold it until it is read).
        """
        uid_list = sorted(set(uids))
        if not uid_list:
            return []
        batch = self._take_ahead(uid_list, spec, spool_dir, stream_over)
        if batch is None:
            batch = self._send_batch(uid_list, spec, spool_dir, stream_over)
        if then is not None:
            upcoming = sorted(set(then))
            if upcoming:
                self._ahead = self._send_batch(upcoming, spec, spool_dir, stream_over)
        self._receive(batch)
        if batch.failed is not None:
            batch.discard()
            raise batch.failed
        messages = batch.messages
        messages.sort(key=_by_uid)
        return messages

    def _take_ahead(
        self, uids: list[int], spec: FetchSpec, spool_dir: str | None, stream_over: int
    ) -> _Batch | None:
        ahead = self._ahead
        if ahead is None:
            return None
        if ahead.key == (uids, spec, spool_dir, stream_over):
            self._ahead = None
            return ahead
        self.drop_ahead()  # the caller went another way
        return None

    def drop_ahead(self) -> None:
        """Read a batch sent ahead that nobody will ask for off the stream, and drop it."""
        ahead = self._ahead
        if ahead is None:
            return
        if ahead.tags:
            self._receive(ahead)
        self._ahead = None
        ahead.discard()

    def _settle(self) -> None:
        """Read the batch sent ahead to its end, so that imapclient finds the stream in step."""
        ahead = self._ahead
        if ahead is not None and ahead.tags:
            self._receive(ahead)

    def _send_batch(
        self, uids: list[int], spec: FetchSpec, spool_dir: str | None, stream_over: int
    ) -> _Batch:
        self._require_selected()
        if self._client is None or self.broken:
            raise ConnectionLost("the IMAP connection is closed")
        imap = self._client._imap
        per = PIPELINE_DATA if spec.wants_data else PIPELINE_LISTING
        uid_sets = [_wire.sequence_set(uids[i : i + per]) for i in range(0, len(uids), per)]
        commands = _fetch_commands(uid_sets, spec.items(), b"")
        tags = [_wire.new_tag() for _ in commands]
        for tag, segments in zip(tags, commands, strict=True):
            log_sent(log, tag + b" " + b"".join(segments))
        if self._reader is None:  # from now on our reader owns the stream, until it is given back
            if isinstance(imap.file, _wire.Prefixed) and not imap.file.pending:
                imap.file = imap.file.file
            self._reader = _wire.BulkReader(imap.file, recv=_direct_read(imap))
        data = _wire.pipelined(tags, commands)
        self._guard("UID FETCH", lambda: imap.send(data))
        return _Batch(uids, spec, spool_dir, stream_over, set(tags))

    def _guard(self, what: str, fn: Callable[[], T]) -> T:
        """``_run`` for the bulk path: any failure but a refusal leaves the connection closed."""
        try:
            return self._run(what, fn)
        except CommandError:
            raise
        except BaseException:
            self._ahead = self._reader = None
            self.shutdown()  # interrupted mid-response: the stream position is unknown
            raise

    def _receive(self, batch: _Batch) -> None:
        """Read until every command of ``batch`` is answered. Messages of the batch sent ahead
        that arrive meanwhile (a server may interleave pipelined replies) are kept for it."""
        if not batch.tags:
            return  # read already (``_settle``)
        reader = self._reader
        assert reader is not None
        ahead = self._ahead if self._ahead is not batch else None
        spec = batch.spec
        head = _body_head(spec)
        spool = _spooler(batch.spool_dir) if spec.wants_data else None
        limit = batch.stream_over if spool is not None else _wire.MAX_MEMORY_LITERAL
        mine = set(batch.uids)
        theirs = set(ahead.uids) if ahead is not None else set()
        convert = functools.partial(message_from_items, spec=spec)
        of_body = Message._of_body

        listing = spec == _LISTING

        def parse(responses: list[list[bytes | _wire.Literal | _wire.Spooled]] | bytes) -> None:
            try:
                direct: list[Message] | None = None
                if isinstance(responses, bytes):
                    if listing:
                        values = _wire.fetch_block_values(responses)
                        direct = None if values is None else _listing_messages(values)
                    parsed = [] if direct is not None else _wire.parse_fetch_block(responses)
                else:
                    parsed = _wire.parse_fetch_batch(responses)
                append = batch.messages.append
                messages = direct if direct is not None else (convert(row) for row in parsed if "UID" in row)
                for message in messages:
                    if message.uid in mine:
                        append(message)
                    elif message.uid in theirs:
                        ahead.messages.append(message)  # type: ignore[union-attr]
                    else:  # not asked for: nobody would remove a body streamed to a file
                        discard_messages((message,))
            except (ValueError, TypeError, RecursionError, ProtocolError) as exc:
                # a server that sends garbage is not trusted with the next command
                raise ProtocolError(f"UID FETCH: malformed response ({exc})") from None

        def run() -> None:
            general: list[list[bytes | _wire.Literal | _wire.Spooled]] = []
            blocks = not spec.wants_data
            append = batch.messages.append
            while batch.tags:
                if head is not None:
                    rows = reader.body_rows(head, limit)
                    if rows:
                        for row in rows:
                            if row[0] in mine:
                                append(of_body(*row))
                            elif row[0] in theirs:
                                ahead.messages.append(of_body(*row))  # type: ignore[union-attr]
                        continue
                elif blocks:
                    block = reader.fetch_block()
                    if block:
                        parse(block)
                        continue
                elif spec.wants_data:  # bodies with other items: whole responses cut, parsed in bulk
                    whole = reader.literal_block(limit)
                    if whole:
                        general.extend(whole)
                        continue
                parts = reader.response(spool=spool, spool_over=batch.stream_over)
                blocks = not spec.wants_data and len(parts) == 1
                first = parts[0]
                assert isinstance(first, bytes)
                tag = first.split(b" ", 1)[0]
                owner = batch if tag in batch.tags else None
                if owner is None and ahead is not None and tag in ahead.tags:
                    owner = ahead
                if owner is not None:
                    log_received(log, first)
                    owner.tags.discard(tag)
                    try:
                        _wire.tagged_status(first, tag, "UID FETCH")
                    except CommandError as exc:  # refused; the stream is in step
                        owner.failed = owner.failed or exc
                    if general:
                        parse(general)
                        general = []
                    continue
                if b" FETCH (" in first[:40]:
                    general.append(parts)
                    continue
                if first.startswith(b"* "):
                    _number, name, _rest = _wire.untagged(parts)
                    if name == b"BYE":
                        raise ConnectionLost(f"UID FETCH: the server said BYE: {_s(first[6:]).strip()}")
                elif first.startswith(b"+"):
                    raise ProtocolError("UID FETCH: unexpected continuation request")
                else:
                    raise ProtocolError(f"UID FETCH: unexpected line {first[:60]!r}")
            if general:
                parse(general)

        self._guard("UID FETCH", run)
        if self._ahead is None or not self._ahead.tags:
            # nothing more in flight: the bytes read past our last reply are imaplib's
            self._reader = None
            assert self._client is not None
            self._give_back(self._client._imap, reader)

    def sizes(self, uid_set: bytes | list[bytes]) -> list[tuple[int, int, tuple[str, ...]]]:
        """(uid, size, flags) for a UID set (or several, pipelined): the first step of batching by bytes."""
        rows: list[tuple[int, int, tuple[str, ...]]] = self.uid_fetch_many(
            uid_set if isinstance(uid_set, list) else [uid_set],
            b"(UID RFC822.SIZE FLAGS)",
            convert=_size_row,
            block_rows=_wire.parse_size_block,
        )
        rows.sort()
        return rows

    # --- flags, copy, move, delete, append ---------------------------------------------------
    def store_flags(self, uids: Iterable[int], flags: Iterable[str] | str, op: str) -> None:
        self._require_selected()
        uid_list = sorted(set(uids))
        if not uid_list:
            return
        names = _norm_flags(flags)
        client = self.client
        fn = {"add": client.add_flags, "remove": client.remove_flags, "set": client.set_flags}[op]
        self._run(f"UID STORE {op}", lambda: fn(uid_list, names, silent=True))

    def copy(self, uids: Iterable[int], destination: str) -> None:
        self._require_selected()
        check_mailbox_name(destination)
        uid_list = sorted(set(uids))
        if uid_list:
            self._run(f"UID COPY to {destination!r}", lambda: self.client.copy(uid_list, destination))

    def move(self, uids: Iterable[int], destination: str) -> None:
        """MOVE when offered; else COPY + \\Deleted + UID EXPUNGE (only these UIDs) with UIDPLUS.

        Without MOVE or UIDPLUS there is no way to remove only our messages (a plain EXPUNGE
        would also remove other clients' \\Deleted ones), so that case is refused.
        """
        self._require_selected()
        check_mailbox_name(destination)
        uid_list = sorted(set(uids))
        if not uid_list:
            return
        if self.has("MOVE"):
            self._run(f"UID MOVE to {destination!r}", lambda: self.client.move(uid_list, destination))
            return
        if not self.has("UIDPLUS"):
            raise PermanentError(
                "the server has neither MOVE nor UIDPLUS: a safe move is impossible "
                "(use copy() and delete yourself)"
            )
        self.copy(uid_list, destination)
        self.expunge_uids(uid_list)

    def expunge_uids(self, uids: Iterable[int]) -> None:
        uid_list = sorted(set(uids))
        if not uid_list:
            return
        if not self.has("UIDPLUS"):
            raise PermanentError("UID EXPUNGE needs UIDPLUS; a plain EXPUNGE would remove others' mail")
        self.store_flags(uid_list, ["\\Deleted"], "add")
        self._run("UID EXPUNGE", lambda: self.client.uid_expunge(uid_list))

    def append(
        self,
        mailbox: str,
        raw: bytes,
        *,
        flags: Iterable[str] = (),
        date: datetime | None = None,
    ) -> int | None:
        """APPEND; returns the new UID when the server has UIDPLUS (APPENDUID), else None."""
        check_mailbox_name(mailbox)
        names = _norm_flags(flags)
        result = self._run(
            f"APPEND to {mailbox!r}",
            lambda: self.client.append(mailbox, raw, flags=names, msg_time=date),
        )
        text = _s(result)
        if "APPENDUID" in text.upper():
            try:
                return int(text.upper().split("APPENDUID", 1)[1].split("]", 1)[0].split()[1])
            except (IndexError, ValueError):
                return None
        return None

    def noop(self) -> None:
        self._run("NOOP", lambda: self.client.noop())


@dataclass(eq=False)
class _Batch:
    """One fetch batch's pipelined commands once sent: the tags still unanswered, what came."""

    uids: list[int]
    spec: FetchSpec
    spool_dir: str | None
    stream_over: int
    tags: set[bytes]
    messages: list[Message] = field(default_factory=list)
    failed: CommandError | None = None

    @property
    def key(self) -> tuple[list[int], FetchSpec, str | None, int]:
        return self.uids, self.spec, self.spool_dir, self.stream_over

    def discard(self) -> None:
        """Nobody will take these messages: bodies streamed to files go too."""
        discard_messages(self.messages)
        self.messages = []


def discard_messages(messages: Iterable[Message]) -> None:
    """Remove the files of bodies streamed to disk for messages nobody will take."""
    for message in messages:
        if message.body_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(message.body_path)


_by_uid = operator.attrgetter("uid")


@functools.lru_cache(maxsize=32)
def _body_head(spec: FetchSpec) -> re.Pattern[bytes] | None:
    """The fast reader's pattern for ``spec``, when it asks for one body section and plain items."""
    if spec.envelope or spec.headers or spec.bodystructure or spec.internal_date or spec.modseq:
        return None
    if spec.body == (spec.part is not None):  # no section, or two of them
        return None
    return _wire.body_head(spec.part or "", flags=spec.flags, size=spec.size)


_LISTING = FetchSpec(envelope=True)  # the usual listing: UID FLAGS RFC822.SIZE ENVELOPE


def _listing_messages(values: list[Any]) -> list[Message] | None:
    """``[UID u FLAGS (...) RFC822.SIZE s ENVELOPE (...)]`` item lists straight to Messages (what
    ``message_from_items`` makes of the same items, without a dict per message), or None when
    any response has another shape."""
    out: list[Message] = []
    append = out.append
    make = Message._of_fields
    for items in values:
        if (
            type(items) is not list
            or len(items) != 8
            or items[0] != "UID"
            or items[2] != "FLAGS"
            or items[4] != "RFC822.SIZE"
            or items[6] != "ENVELOPE"
            or type(items[3]) is not list
        ):
            return None
        raw, size = items[3], items[5]
        flags = tuple(raw) if not raw or type(raw[0]) is str else _flags(raw)
        append(make(int(items[1]), flags, None if size is None else int(size), None, items[7],
                    None, None, None, None, None))  # fmt: skip
    return out


def _direct_read(imap: Any) -> Callable[[int, memoryview], int] | None:
    """``read(size, buffer)`` straight from imaplib's socket, for when its buffered file is drained.

    Under TLS that is the SSL object's own ``read``: what ``SSLSocket.recv_into`` calls after two
    layers of Python checks (same timeout and errors; a ragged EOF the reader turns into 0).
    """
    sock = getattr(imap, "sock", None)
    if sock is None or type(imap.file) is not io.BufferedReader:
        return None  # another kind of file: its buffering is not known
    sslobj = getattr(sock, "_sslobj", None)
    read = getattr(sslobj, "read", None)
    if isinstance(sock, ssl.SSLSocket) and callable(read):
        return read  # type: ignore[no-any-return]
    return lambda size, buffer: sock.recv_into(buffer, size)


def _fetch_commands(uid_sets: list[bytes], items: bytes, modifiers: bytes) -> list[list[bytes]]:
    tail = [b" ", modifiers] if modifiers else []
    return [[b"UID FETCH ", uid_set, b" ", items, *tail] for uid_set in uid_sets]


def _size_row(row: dict[str, Any]) -> tuple[int, int, tuple[str, ...]]:
    flags = row.get("FLAGS", ())
    return (
        int(row["UID"]),
        int(row.get("RFC822.SIZE", 0)),
        tuple(flags) if not flags or type(flags[0]) is str else _flags(flags),
    )


def _spooler(spool_dir: str | None) -> _wire.Spool:
    def spool(size: int) -> tuple[str, IO[bytes]]:
        fd, path = tempfile.mkstemp(prefix="mailkit-imap-", suffix=".eml", dir=spool_dir)
        return path, os.fdopen(fd, "wb")

    return spool
