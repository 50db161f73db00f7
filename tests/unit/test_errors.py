"""Error tree shape and the one place dependency errors are translated."""

import asyncio
import builtins
import socket
import ssl

import pytest

import mailkit
from mailkit.errors import (
    CertificateError,
    CommandError,
    ConfigError,
    ConnectError,
    ConnectionLost,
    MailkitError,
    PermanentError,
    ProtocolError,
    Reply,
    TimeoutError,
    TLSError,
    TransientError,
    translate_os_error,
    translating_os_errors,
)


def test_errors_also_inherit_the_matching_builtins():
    assert issubclass(TimeoutError, builtins.TimeoutError)
    assert issubclass(ConnectError, ConnectionError)
    assert issubclass(ConfigError, ValueError)
    assert issubclass(CertificateError, TLSError)
    assert issubclass(ConnectionLost, ProtocolError)
    assert issubclass(TransientError, CommandError) and issubclass(PermanentError, CommandError)
    for name in mailkit.__all__:
        obj = getattr(mailkit, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and not issubclass(obj, Warning):
            assert issubclass(obj, MailkitError), name


def test_reply_is_carried_and_shown():
    reply = Reply("smtp", 550, "No such user", enhanced="5.1.1")
    err = PermanentError("recipient refused", reply=reply)
    assert err.reply is reply
    assert str(err) == "recipient refused (server said: 550 5.1.1 No such user)"


@pytest.mark.parametrize(
    ("exc", "expected", "text"),
    [
        (ssl.SSLCertVerificationError(1, "x"), CertificateError, "certificate verification failed"),
        (ssl.SSLError(1, "bad record"), TLSError, "TLS handshake failed"),
        (builtins.TimeoutError(), TimeoutError, "timed out"),
        (ConnectionRefusedError(111, "refused"), ConnectError, "connection refused"),
        (ConnectionResetError(104, "reset"), ConnectionLost, "connection lost"),
        (asyncio.IncompleteReadError(b"", 10), ConnectionLost, "closed by the server"),
        (socket.gaierror(-2, "Name or service not known"), ConnectError, "cannot resolve"),
        (OSError(113, "No route to host"), ConnectError, "No route to host"),
    ],
)
def test_translation_most_specific_first(exc, expected, text):
    translated = translate_os_error(exc, "connecting to h:1")
    assert type(translated) is expected
    assert text in str(translated)
    assert str(translated).startswith("connecting to h:1")


def test_context_manager_keeps_the_cause_and_passes_mailkit_errors_through():
    with pytest.raises(ConnectError) as info, translating_os_errors("dialing"):
        raise ConnectionRefusedError(111, "refused")
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    original = ProtocolError("kept")
    with pytest.raises(ProtocolError) as info2, translating_os_errors("x"):
        raise original
    assert info2.value is original
