"""The sans-I/O probe dialogues: feed server lines, compare what the client does."""

from __future__ import annotations

import base64

from mailkit.config import Protocol, Security
from mailkit.discovery.dialogue import (
    Dialogue,
    Finding,
    Login,
    Read,
    Send,
    UpgradeTLS,
    dialogue_for,
)

LOGIN = Login("alice@example.com", "s3cret")


def play(dialogue: Dialogue, server: list[bytes]) -> tuple[list[object], Finding]:
    """Drive ``dialogue`` with ``server`` lines; returns the client's ops and the finding."""
    ops: list[object] = []
    lines = iter(server)
    answer: bytes | None = None
    try:
        while True:
            op = dialogue.send(answer)
            answer = None
            ops.append(op)
            if isinstance(op, Read):
                answer = next(lines, b"")
    except StopIteration as stop:
        return ops, stop.value


def sent(ops: list[object]) -> list[bytes]:
    return [op.line for op in ops if isinstance(op, Send)]


SMTP_EHLO_PLAIN = [b"250-mx.example.com\r\n", b"250-PIPELINING\r\n", b"250 STARTTLS\r\n"]
SMTP_EHLO_TLS = [b"250-mx.example.com\r\n", b"250-AUTH PLAIN LOGIN\r\n", b"250 8BITMIME\r\n"]


def test_smtp_starttls_upgrades_rereads_capabilities_then_logs_in() -> None:
    server = [b"220 mx ESMTP\r\n", *SMTP_EHLO_PLAIN, b"220 go ahead\r\n", *SMTP_EHLO_TLS, b"235 ok\r\n"]
    ops, finding = play(
        dialogue_for(Protocol.SMTP, Security.STARTTLS, LOGIN, ehlo_name="[127.0.0.1]"), server
    )
    assert sent(ops)[:3] == [b"EHLO [127.0.0.1]", b"STARTTLS", b"EHLO [127.0.0.1]"]
    upgrade = ops.index(UpgradeTLS())
    auth = next(i for i, op in enumerate(ops) if isinstance(op, Send) and op.line.startswith(b"AUTH"))
    assert upgrade < auth  # credentials only after the handshake
    auth_op = ops[auth]
    assert isinstance(auth_op, Send) and auth_op.secret
    assert base64.b64decode(auth_op.line.split()[2]) == b"\0alice@example.com\0s3cret"
    assert finding.outcome == "ok" and finding.logged_in
    assert finding.auth_mechanisms == ("PLAIN", "LOGIN")  # read after TLS, not before


def test_smtp_without_starttls_is_no_starttls_and_sends_no_credentials() -> None:
    server = [b"220 mx\r\n", b"250-mx\r\n", b"250 AUTH PLAIN\r\n"]
    ops, finding = play(dialogue_for(Protocol.SMTP, Security.STARTTLS, LOGIN), server)
    assert finding.outcome == "no-starttls"
    assert not any(op.secret for op in ops if isinstance(op, Send))
    assert UpgradeTLS() not in ops


def test_smtp_starttls_refused() -> None:
    server = [b"220 mx\r\n", *SMTP_EHLO_PLAIN, b"454 4.7.0 TLS not available\r\n"]
    _, finding = play(dialogue_for(Protocol.SMTP, Security.STARTTLS, None), server)
    assert finding.outcome == "no-starttls"
    assert finding.reply is not None and finding.reply.code == 454


def test_smtp_bad_greeting_and_garbage() -> None:
    _, finding = play(dialogue_for(Protocol.SMTP, Security.TLS, None), [b"554 go away\r\n"])
    assert finding.outcome == "refused" and "554" in finding.detail
    _, finding = play(dialogue_for(Protocol.SMTP, Security.TLS, None), [b"HTTP/1.1 400 Bad\r\n"])
    assert finding.outcome == "refused" and "not an SMTP reply" in finding.detail
    _, finding = play(dialogue_for(Protocol.SMTP, Security.TLS, None), [])
    assert finding.outcome == "refused" and "closed" in finding.detail


def test_smtp_endless_multiline_reply_is_cut() -> None:
    server = [b"220 mx\r\n"] + [b"250-x\r\n"] * 1000
    _, finding = play(dialogue_for(Protocol.SMTP, Security.TLS, None), server)
    assert finding.outcome == "refused" and "too long" in finding.detail


def test_smtp_auth_login_and_failure() -> None:
    server = [
        b"220 mx\r\n",
        b"250-mx\r\n",
        b"250 AUTH LOGIN\r\n",
        b"334 VXNlcm5hbWU6\r\n",
        b"334 UGFzc3dvcmQ6\r\n",
    ]
    ops, finding = play(dialogue_for(Protocol.SMTP, Security.TLS, LOGIN), [*server, b"535 5.7.8 no\r\n"])
    assert finding.outcome == "auth-failed" and finding.reply is not None and finding.reply.code == 535
    secrets = [op for op in ops if isinstance(op, Send) and op.secret]
    assert [base64.b64decode(op.line) for op in secrets] == [b"alice@example.com", b"s3cret"]


def test_smtp_plaintext_opt_in_logs_in_without_upgrade() -> None:
    server = [b"220 mx\r\n", b"250-mx\r\n", b"250 AUTH PLAIN\r\n", b"235 ok\r\n"]
    ops, finding = play(dialogue_for(Protocol.SMTP, Security.INSECURE, LOGIN), server)
    assert finding.outcome == "ok" and finding.logged_in and UpgradeTLS() not in ops


def test_imap_starttls_and_authenticate_plain() -> None:
    server = [
        b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n",
        b"A2 OK begin TLS\r\n",
        b"* CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2\r\n",
        b"A3 OK done\r\n",
        b"+ \r\n",
        b"A4 OK logged in\r\n",
    ]
    ops, finding = play(dialogue_for(Protocol.IMAP, Security.STARTTLS, LOGIN), server)
    assert sent(ops)[:4] == [b"A2 STARTTLS", b"A3 CAPABILITY", b"A4 AUTHENTICATE PLAIN", sent(ops)[3]]
    assert ops.index(UpgradeTLS()) < ops.index(Send(b"A3 CAPABILITY"))
    assert finding.outcome == "ok" and finding.logged_in
    assert finding.auth_mechanisms == ("PLAIN", "XOAUTH2")


def test_imap_no_starttls_preauth_and_bye() -> None:
    _, finding = play(
        dialogue_for(Protocol.IMAP, Security.STARTTLS, LOGIN), [b"* OK [CAPABILITY IMAP4rev1] hi\r\n"]
    )
    assert finding.outcome == "no-starttls"
    _, finding = play(dialogue_for(Protocol.IMAP, Security.TLS, None), [b"* PREAUTH hi\r\n"])
    assert finding.outcome == "refused"
    _, finding = play(dialogue_for(Protocol.IMAP, Security.TLS, None), [b"* BYE busy\r\n"])
    assert finding.outcome == "refused"


def test_imap_capability_command_when_greeting_has_none_and_login_refused() -> None:
    server = [
        b"* OK hi\r\n",
        b"* CAPABILITY IMAP4rev1\r\n",
        b"A1 OK\r\n",
        b"A4 NO [AUTHENTICATIONFAILED] bad\r\n",
    ]
    ops, finding = play(dialogue_for(Protocol.IMAP, Security.TLS, LOGIN), server)
    login = next(op for op in ops if isinstance(op, Send) and op.line.startswith(b"A4 LOGIN"))
    assert isinstance(login, Send) and login.secret
    assert finding.outcome == "auth-failed"


def test_imap_login_quotes_credentials() -> None:
    server = [b"* OK [CAPABILITY IMAP4rev1] hi\r\n", b"A4 OK\r\n"]
    ops, _ = play(dialogue_for(Protocol.IMAP, Security.TLS, Login('a"b', "p\\w")), server)
    assert Send(b'A4 LOGIN "a\\"b" "p\\\\w"', secret=True) in ops


def test_pop3_stls_capa_again_and_auth() -> None:
    server = [
        b"+OK ready\r\n",
        b"+OK\r\n",
        b"USER\r\n",
        b"STLS\r\n",
        b".\r\n",
        b"+OK begin\r\n",
        b"+OK\r\n",
        b"USER\r\n",
        b"SASL PLAIN LOGIN\r\n",
        b".\r\n",
        b"+OK in\r\n",
    ]
    ops, finding = play(dialogue_for(Protocol.POP3, Security.STARTTLS, LOGIN), server)
    assert sent(ops)[:3] == [b"CAPA", b"STLS", b"CAPA"]
    assert finding.outcome == "ok" and finding.logged_in and finding.auth_mechanisms == ("PLAIN", "LOGIN")


def test_pop3_without_stls_and_user_pass() -> None:
    _, finding = play(
        dialogue_for(Protocol.POP3, Security.STARTTLS, LOGIN), [b"+OK\r\n", b"+OK\r\n", b"USER\r\n", b".\r\n"]
    )
    assert finding.outcome == "no-starttls"
    server = [b"+OK\r\n", b"-ERR no CAPA\r\n", b"+OK\r\n", b"-ERR [AUTH] bad\r\n"]
    ops, finding = play(dialogue_for(Protocol.POP3, Security.TLS, LOGIN), server)
    assert Send(b"PASS s3cret", secret=True) in ops
    assert finding.outcome == "auth-failed"


def test_pop3_garbage() -> None:
    _, finding = play(dialogue_for(Protocol.POP3, Security.TLS, None), [b"* OK imap?\r\n"])
    assert finding.outcome == "refused" and "not a POP3 reply" in finding.detail
