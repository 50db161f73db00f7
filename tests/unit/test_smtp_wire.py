"""Pure SMTP pieces: reply parsing, error classes and translation, template rendering, auth encodings."""

from __future__ import annotations

import email
import email.policy

import aiosmtplib
import pytest

from mailkit.errors import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    ConnectionLost,
    PermanentError,
    ProtocolError,
    TimeoutError,
    TransientError,
)
from mailkit.message import AddressPolicy
from mailkit.smtp._wire import Capabilities
from mailkit.smtp.errors import (
    DeliveryUnknownError,
    RecipientsRefusedError,
    SendDeferredError,
    SendRefusedError,
    is_retryable,
    reply_error,
    smtp_reply,
    translate,
)
from mailkit.smtp.result import SendResult
from mailkit.smtp.template import MailTemplate

TEST = AddressPolicy(test_environment=True)


def test_enhanced_status_code_is_split_off() -> None:
    reply = smtp_reply(550, "5.1.1 <x@example.test>: User unknown")
    assert (reply.code, reply.enhanced, reply.text) == (550, "5.1.1", "<x@example.test>: User unknown")
    assert smtp_reply(250, "Ok").enhanced is None
    assert smtp_reply(250, "5.1.1 mismatched class").enhanced is None


def test_reply_classes_and_retryability() -> None:
    assert isinstance(reply_error(smtp_reply(451, "4.3.0 later"), "x"), SendDeferredError)
    assert isinstance(reply_error(smtp_reply(554, "5.7.1 no"), "x"), SendRefusedError)
    assert issubclass(SendDeferredError, TransientError) and issubclass(SendRefusedError, PermanentError)
    assert issubclass(RecipientsRefusedError, PermanentError)
    assert issubclass(DeliveryUnknownError, ProtocolError)
    assert is_retryable(SendDeferredError("x")) and is_retryable(ConnectionLost("x"))
    assert is_retryable(TimeoutError("x")) and is_retryable(ConnectError("x"))
    assert not is_retryable(DeliveryUnknownError("x"))  # may have been delivered: never automatic
    assert not is_retryable(SendRefusedError("x"))


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (aiosmtplib.SMTPAuthenticationError(535, "5.7.8 bad"), AuthenticationError),
        (aiosmtplib.SMTPServerDisconnected("gone"), ConnectionLost),
        (aiosmtplib.SMTPReadTimeoutError("slow"), TimeoutError),
        (aiosmtplib.SMTPConnectTimeoutError("slow"), TimeoutError),
        (aiosmtplib.SMTPConnectError("refused"), ConnectError),
        (aiosmtplib.SMTPResponseException(451, "4.3.0 later"), SendDeferredError),
        (aiosmtplib.SMTPResponseException(554, "5.3.4 too big"), SendRefusedError),
        (ConnectionResetError(), ConnectionLost),
        (ValueError("Command arg contains a prohibited control character"), ConfigError),
    ],
)
def test_translate_maps_every_aiosmtplib_error(exc: BaseException, cls: type) -> None:
    translated = translate(exc, "SMTP host:25")
    assert isinstance(translated, cls)
    assert "SMTP host:25" in str(translated)


def test_translate_starttls_refusal_is_a_security_error() -> None:
    from mailkit.errors import SecurityError

    err = translate(aiosmtplib.SMTPResponseException(454, "4.7.0 TLS not available"), "SMTP h: STARTTLS")
    assert isinstance(err, SecurityError) and err.reply is not None and err.reply.code == 454
    err = translate(aiosmtplib.SMTPException("SMTP STARTTLS extension not supported by server."), "x")
    assert isinstance(err, SecurityError)


def test_capabilities_from_ehlo() -> None:
    caps = Capabilities.from_ehlo({"pipelining": "", "size": "10240000", "smtputf8": "", "8bitmime": ""})
    assert caps.pipelining and caps.smtputf8 and caps.eight_bit_mime and caps.size == 10240000
    assert Capabilities.from_ehlo({"size": "0"}).size is None


def test_queue_id_from_the_final_reply() -> None:
    result = SendResult(
        "k", "<m@x>", "accepted", ("a@x",), reply=smtp_reply(250, "2.0.0 Ok: queued as 4AbC12")
    )
    assert result.queue_id == "4AbC12" and result.ok


TEMPLATE = (
    "Subject: Hello {{ first_name }} \u2013 news\nReply-To: Tëam <alice@example.test>\nX-Tag: t\n\n"
    "Dear {{ first_name }},\n.leading dot\n{{ long }}\n"
)


def test_template_renders_a_valid_message() -> None:
    tpl = MailTemplate.parse(TEMPLATE, "<p>Dear {{ first_name }}</p>")
    row = {"email": "bob@example.test", "first_name": "Bób <b>", "long": "é" * 2000}
    out = tpl.render(row, sender="alice@example.test", policy=TEST)
    assert out.recipients == ("bob@example.test",) and out.key == "bob@example.test"
    assert max(len(line) for line in out.data.split(b"\r\n")) <= 998
    assert out.data.isascii() and out.data.count(b"\n") == out.data.count(b"\r\n")
    parsed = email.message_from_bytes(out.data, policy=email.policy.default)
    assert parsed["Subject"] == "Hello Bób <b> \u2013 news"
    assert parsed["Reply-To"].addresses[0].display_name == "Tëam"
    assert parsed["X-Tag"] == "t" and parsed["To"] == "bob@example.test"
    plain = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
    assert plain == "Dear Bób <b>,\n.leading dot\n" + "é" * 2000 + "\n"
    html = parsed.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Bób &lt;b&gt;" in html  # HTML is escaped, text is not


def test_template_refuses_header_injection_from_csv() -> None:
    tpl = MailTemplate.parse("Subject: Hi {{ name }}\n\nbody\n")
    with pytest.raises(ConfigError):
        tpl.render(
            {"email": "bob@example.test", "name": "x\r\nBcc: victim@example.test"},
            sender="alice@example.test",
            policy=TEST,
        )


@pytest.mark.parametrize(
    "source",
    [
        "no blank line",
        "From: a@example.test\n\nno subject\n",
        "Subject: x\nTo: y@example.test\n\nb",
        "Subject: {{ broken\n\nb",
    ],
)
def test_bad_templates_are_config_errors(source: str) -> None:
    with pytest.raises(ConfigError):
        MailTemplate.parse(source)


def test_missing_placeholder_is_an_error() -> None:
    tpl = MailTemplate.parse("Subject: Hi {{ first_name }}\n\nbody\n")
    with pytest.raises(ConfigError, match="first_name"):
        tpl.render({"email": "bob@example.test"}, sender="alice@example.test", policy=TEST)


class _FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.protocol: object = None

    def set_protocol(self, protocol: object) -> None:
        self.protocol = protocol

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.closed = True

    close = abort


async def test_reply_parser_handles_split_and_multiline_replies() -> None:
    from mailkit.smtp._wire import Wire

    transport = _FakeTransport()
    wire = Wire(transport, "test")  # type: ignore[arg-type]
    for chunk in (b"250-first\r\n250-sec", b"ond\r\n250 last\r\n354 go", b" ahead\r\n550 5.1.1 no\r\n"):
        wire.data_received(chunk)
    first, second, third = await wire.read(3, timeout=1)
    assert (first.code, first.enhanced, first.text) == (250, None, "first\nsecond\nlast")
    assert (second.code, second.text) == (354, "go ahead")
    assert (third.code, third.enhanced, third.text) == (550, "5.1.1", "no")
    wire.data_received(b"garbage\r\n")
    assert transport.closed and not wire.usable
    with pytest.raises(ProtocolError):
        await wire.read(1, timeout=1)


async def test_read_timeout_drops_the_connection() -> None:
    from mailkit.smtp._wire import Wire

    transport = _FakeTransport()
    wire = Wire(transport, "test")  # type: ignore[arg-type]
    with pytest.raises(TimeoutError):
        await wire.read(1, timeout=0.05)
    assert transport.closed
