"""Smoke tests for the local mail stack, using only the standard library.

They prove each server path works end to end (send over every SMTP port, read back over
every IMAP/POP3 port, TLS verified against the test CA) before mailkit's own integration
tests rely on it.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import poplib
import re
import smtplib
import socket
import ssl
import threading
import time
import uuid
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy

import pytest

from tests.integration.mailstack import BENCH_USERS, MailStack

ALICE = "alice@example.test"
BOB = "bob@example.test"
CAROL = "carol@example.test"
DAVE = "dave@example.test"
PERF = "perf@example.test"


def _message(sender: str, to: str, *, body: str = "Hello from the smoke test.\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = f"smoke {uuid.uuid4().hex}"
    msg.set_content(body)
    return msg


def _imap_find(imap: imaplib.IMAP4, user: str, password: str, subject: str) -> bytes:
    """Log in, find the single message with ``subject`` in INBOX, return its raw bytes."""
    imap.login(user, password)
    typ, _ = imap.select("INBOX")
    assert typ == "OK"
    typ, data = imap.uid("SEARCH", "SUBJECT", f'"{subject}"')
    assert typ == "OK"
    uids = data[0].split()
    assert len(uids) == 1, f"expected one message with {subject!r}, found {uids}"
    typ, data = imap.uid("FETCH", uids[0], "(BODY.PEEK[])")
    assert typ == "OK"
    raw = data[0][1]
    assert isinstance(raw, bytes)
    imap.logout()
    return raw


def _pop3_only_message(pop: poplib.POP3, user: str, password: str) -> bytes:
    pop.user(user)
    pop.pass_(password)
    count, _size = pop.stat()
    assert count == 1
    _resp, lines, _octets = pop.retr(1)
    pop.quit()
    return b"\r\n".join(lines)


def _assert_same_message(raw: bytes, sent: EmailMessage) -> None:
    got = message_from_bytes(raw, policy=default_policy)
    assert got["Subject"] == sent["Subject"]
    assert got["From"] == sent["From"]
    assert got.get_content().strip() == sent.get_content().strip()


# --- the stack itself --------------------------------------------------------------------


def _master_pids(stack: MailStack) -> list[str]:
    pidfiles = [stack.root / "run/dovecot/master.pid", stack.root / "postfix/queue/pid/master.pid"]
    return [path.read_text().strip() for path in pidfiles]


def test_up_on_a_running_stack_restarts_nothing(mailstack: MailStack) -> None:
    before = _master_pids(mailstack)
    result = mailstack.script("up")
    assert "already up" in result.stdout
    assert _master_pids(mailstack) == before

    status = mailstack.script("status")
    lines = status.stdout.splitlines()
    assert len(lines) == 8
    assert all(line.endswith(" up") for line in lines), status.stdout


def test_env_prints_shell_exports(mailstack: MailStack) -> None:
    out = mailstack.script("env").stdout
    assert f"export MAILSTACK_ROOT='{mailstack.root}'" in out
    assert f"export MAILSTACK_CA_FILE='{mailstack.ca_file}'" in out
    assert f"export MAILSTACK_IMAPS_PORT={mailstack.imaps_port}" in out


def test_urls_use_mailkit_schemes(mailstack: MailStack) -> None:
    h = mailstack.host
    assert mailstack.url("submissions") == f"smtps://{h}:{mailstack.submissions_port}"
    assert mailstack.url("submission") == f"smtp+starttls://{h}:{mailstack.submission_port}"
    assert mailstack.url("smtp", insecure=True) == f"smtp+insecure://{h}:{mailstack.smtp_port}"
    assert mailstack.url("imap") == f"imap+starttls://{h}:{mailstack.imap_port}"
    assert mailstack.url("pop3s") == f"pop3s://{h}:{mailstack.pop3s_port}"
    with pytest.raises(ValueError, match="no insecure variant"):
        mailstack.url("imaps", insecure=True)


def test_users_are_known(mailstack: MailStack) -> None:
    assert mailstack.users[ALICE] == "alicepw"
    assert mailstack.users[DAVE] == "pässwörd"
    assert {BOB, CAROL, PERF} <= set(mailstack.users)


def test_imap_advertises_extensions(mailstack: MailStack, ssl_context: ssl.SSLContext) -> None:
    with imaplib.IMAP4_SSL(mailstack.host, mailstack.imaps_port, ssl_context=ssl_context) as imap:
        imap.login(ALICE, mailstack.users[ALICE])
        typ, data = imap.capability()
        assert typ == "OK"
        caps = set(data[0].decode().upper().split())
        imap.logout()
    assert {"IDLE", "CONDSTORE", "QRESYNC", "MOVE", "UIDPLUS", "SPECIAL-USE"} <= caps


def test_special_use_folders_exist(clean_mailstack: MailStack, ssl_context: ssl.SSLContext) -> None:
    stack = clean_mailstack
    with imaplib.IMAP4(stack.host, stack.imap_port) as imap:
        imap.starttls(ssl_context=ssl_context)
        imap.login(BOB, stack.users[BOB])
        typ, data = imap.list()
        imap.logout()
    assert typ == "OK"
    listing = b"\n".join(data).decode()
    for flag, name in (("Drafts", "Drafts"), ("Sent", "Sent"), ("Trash", "Trash"), ("Junk", "Junk")):
        assert re.search(rf"\\{flag}\b.*\b{name}", listing), listing


# --- sending over each SMTP port, reading back over each IMAP/POP3 port -------------------


def test_submission_starttls_auth_then_read_over_imaps(
    clean_mailstack: MailStack, ssl_context: ssl.SSLContext
) -> None:
    stack = clean_mailstack
    msg = _message(ALICE, BOB)
    with smtplib.SMTP(stack.host, stack.submission_port, timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        assert not smtp.has_extn("auth"), "AUTH must not be offered before STARTTLS"
        smtp.starttls(context=ssl_context)
        smtp.ehlo()
        assert smtp.has_extn("auth")
        smtp.login(ALICE, stack.users[ALICE])
        assert smtp.send_message(msg) == {}
    stack.wait_for_messages(BOB, 1)
    with imaplib.IMAP4_SSL(stack.host, stack.imaps_port, ssl_context=ssl_context) as imap:
        raw = _imap_find(imap, BOB, stack.users[BOB], msg["Subject"])
    _assert_same_message(raw, msg)


def test_submissions_implicit_tls_then_read_over_imap_starttls(
    clean_mailstack: MailStack, ssl_context: ssl.SSLContext
) -> None:
    stack = clean_mailstack
    msg = _message(BOB, CAROL)
    with smtplib.SMTP_SSL(stack.host, stack.submissions_port, context=ssl_context, timeout=10) as smtp:
        smtp.login(BOB, stack.users[BOB])
        assert smtp.send_message(msg) == {}
    stack.wait_for_messages(CAROL, 1)
    with imaplib.IMAP4(stack.host, stack.imap_port) as imap:
        imap.starttls(ssl_context=ssl_context)
        raw = _imap_find(imap, CAROL, stack.users[CAROL], msg["Subject"])
    _assert_same_message(raw, msg)


def test_plain_port_then_read_over_pop3s(clean_mailstack: MailStack, ssl_context: ssl.SSLContext) -> None:
    stack = clean_mailstack
    msg = _message("someone@elsewhere.test", CAROL)
    # Loopback is in mynetworks: the plain port accepts local mail without AUTH or TLS.
    with smtplib.SMTP(stack.host, stack.smtp_port, timeout=10) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        assert smtp.has_extn("smtputf8")
        assert smtp.send_message(msg) == {}
    stack.wait_for_messages(CAROL, 1)
    pop = poplib.POP3_SSL(stack.host, stack.pop3s_port, context=ssl_context, timeout=10)
    raw = _pop3_only_message(pop, CAROL, stack.users[CAROL])
    _assert_same_message(raw, msg)


def test_alt_port_starttls_then_read_over_pop3_stls(
    clean_mailstack: MailStack, ssl_context: ssl.SSLContext
) -> None:
    stack = clean_mailstack
    msg = _message(ALICE, DAVE)
    with smtplib.SMTP(stack.host, stack.alt_port, timeout=10) as smtp:
        smtp.starttls(context=ssl_context)
        assert smtp.send_message(msg) == {}
    stack.wait_for_messages(DAVE, 1)
    pop = poplib.POP3(stack.host, stack.pop3_port, timeout=10)
    assert "STLS" in pop.capa()
    pop.stls(context=ssl_context)
    # dave's password is not ASCII: poplib sends str as UTF-8.
    pop.user(DAVE)
    pop.pass_(stack.users[DAVE])
    _resp, listing, _ = pop.uidl()
    # UIDL is UID + UIDVALIDITY as 2 x 8 hex digits (pop3_uidl_format = %08Xu%08Xv;
    # Dovecot 2.3 prints them in lower case). UIDs keep growing across resets.
    assert re.fullmatch(rb"1 [0-9a-fA-F]{16}", listing[0]), listing
    _resp, lines, _ = pop.retr(1)
    pop.quit()
    _assert_same_message(b"\r\n".join(lines), msg)


def test_submission_refuses_auth_before_starttls(mailstack: MailStack) -> None:
    token = base64.b64encode(f"\0{ALICE}\0{mailstack.users[ALICE]}".encode()).decode()
    with smtplib.SMTP(mailstack.host, mailstack.submission_port, timeout=10) as smtp:
        smtp.ehlo()
        code, reply = smtp.docmd("AUTH", f"PLAIN {token}")
        assert code == 530, reply
        assert b"STARTTLS" in reply
        code, _ = smtp.docmd("MAIL", f"FROM:<{ALICE}>")
        assert code == 530


def test_submission_refuses_mail_without_auth(
    clean_mailstack: MailStack, ssl_context: ssl.SSLContext
) -> None:
    stack = clean_mailstack
    with smtplib.SMTP(stack.host, stack.submission_port, timeout=10) as smtp:
        smtp.starttls(context=ssl_context)
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            smtp.send_message(_message(ALICE, BOB))
    code, _reply = info.value.recipients[BOB]
    assert code == 554
    assert stack.message_count(BOB) == 0


def test_wrong_password_is_refused(mailstack: MailStack, ssl_context: ssl.SSLContext) -> None:
    with (
        smtplib.SMTP_SSL(mailstack.host, mailstack.submissions_port, context=ssl_context, timeout=10) as smtp,
        pytest.raises(smtplib.SMTPAuthenticationError),
    ):
        smtp.login(ALICE, "not-the-password")
    with (
        imaplib.IMAP4_SSL(mailstack.host, mailstack.imaps_port, ssl_context=ssl_context) as imap,
        pytest.raises(imaplib.IMAP4.error),
    ):
        imap.login(ALICE, "not-the-password")


def test_non_ascii_password_over_smtp_and_imap(mailstack: MailStack, ssl_context: ssl.SSLContext) -> None:
    password = mailstack.users[DAVE].encode("utf-8")
    plain = b"\0" + DAVE.encode() + b"\0" + password
    # smtplib encodes AUTH PLAIN as ASCII, so send it by hand.
    with smtplib.SMTP_SSL(
        mailstack.host, mailstack.submissions_port, context=ssl_context, timeout=10
    ) as smtp:
        smtp.ehlo()
        code, reply = smtp.docmd("AUTH", "PLAIN " + base64.b64encode(plain).decode())
        assert code == 235, reply
    with imaplib.IMAP4_SSL(mailstack.host, mailstack.imaps_port, ssl_context=ssl_context) as imap:
        typ, _ = imap.authenticate("PLAIN", lambda _challenge: plain)
        assert typ == "OK"
        imap.logout()


def test_recipients_outside_example_test_stay_local(
    clean_mailstack: MailStack,
) -> None:
    stack = clean_mailstack
    with smtplib.SMTP(stack.host, stack.smtp_port, timeout=10) as smtp:
        # Unknown users of example.test are refused at RCPT time ...
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            smtp.sendmail(ALICE, ["nobody@example.test"], b"Subject: x\r\n\r\nx\r\n")
        assert info.value.recipients["nobody@example.test"][0] == 550
        # ... while other domains are accepted and dropped by the discard transport.
        assert smtp.sendmail(ALICE, ["someone@example.com"], b"Subject: y\r\n\r\ny\r\n") == {}
    deadline = time.monotonic() + 10
    while "to=<someone@example.com>" not in stack.log_tail(200):
        assert time.monotonic() < deadline, stack.log_tail(30)
        time.sleep(0.1)
    line = next(line for line in stack.log_tail(200).splitlines() if "to=<someone@example.com>" in line)
    assert "relay=none" in line and "status=sent" in line and "drops non-local mail" in line


def test_large_message_over_submissions(clean_mailstack: MailStack, ssl_context: ssl.SSLContext) -> None:
    stack = clean_mailstack
    body = ("x" * 76 + "\n") * (21 * 1024 * 1024 // 77)  # ~21 MB
    msg = _message(ALICE, CAROL, body=body)
    with smtplib.SMTP_SSL(stack.host, stack.submissions_port, context=ssl_context, timeout=60) as smtp:
        smtp.ehlo()
        assert int(smtp.esmtp_features["size"]) >= 50 * 1024 * 1024
        smtp.login(ALICE, stack.users[ALICE])
        assert smtp.send_message(msg) == {}
    stack.wait_for_messages(CAROL, 1, timeout=60)


# --- TLS certificates --------------------------------------------------------------------


@pytest.mark.parametrize("server_hostname", ["127.0.0.1", "localhost"])
def test_certificate_verifies_for_loopback_names(
    mailstack: MailStack, ssl_context: ssl.SSLContext, server_hostname: str
) -> None:
    with (
        socket.create_connection((mailstack.host, mailstack.imaps_port), timeout=10) as raw,
        ssl_context.wrap_socket(raw, server_hostname=server_hostname) as tls,
    ):
        cert = tls.getpeercert()
    assert cert is not None
    assert ("DNS", "localhost") in cert["subjectAltName"]
    assert ("IP Address", "127.0.0.1") in cert["subjectAltName"]


@pytest.mark.parametrize("server_hostname", ["mail.example.test", "127.0.0.2"])
def test_certificate_fails_for_other_names(
    mailstack: MailStack, ssl_context: ssl.SSLContext, server_hostname: str
) -> None:
    with (
        socket.create_connection((mailstack.host, mailstack.submissions_port), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError) as info,
    ):
        ssl_context.wrap_socket(raw, server_hostname=server_hostname)
    assert "mismatch" in info.value.verify_message


def test_certificate_fails_without_the_test_ca(mailstack: MailStack) -> None:
    default_ctx = ssl.create_default_context()  # system trust store only
    with (
        socket.create_connection((mailstack.host, mailstack.imaps_port), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"),
    ):
        default_ctx.wrap_socket(raw, server_hostname="localhost")


def _handshake_with(cert: str, key: str, client: ssl.SSLContext, server_hostname: str) -> dict:
    """TLS handshake against a throwaway server presenting ``cert``; returns the peer cert."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            # The client may give up mid-handshake: that is what some tests expect.
            with conn, contextlib.suppress(ssl.SSLError, OSError):
                server_ctx.wrap_socket(conn, server_side=True).close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client.wrap_socket(raw, server_hostname=server_hostname) as tls,
            ):
                return tls.getpeercert()
        finally:
            thread.join(10)


def test_spare_certificates_for_security_tests(mailstack: MailStack, ssl_context: ssl.SSLContext) -> None:
    tls = mailstack.ca_file.parent
    wrong = (str(tls / "wrong-host.crt"), str(tls / "wrong-host.key"))
    expired = (str(tls / "expired.crt"), str(tls / "expired.key"))
    # Signed by our CA, so it verifies for its own name ...
    cert = _handshake_with(*wrong, ssl_context, "wrong.example.test")
    assert ("DNS", "wrong.example.test") in cert["subjectAltName"]
    # ... and fails for the names clients actually use.
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        _handshake_with(*wrong, ssl_context, "localhost")
    assert "match" in info.value.verify_message
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        _handshake_with(*expired, ssl_context, "localhost")
    assert "expired" in info.value.verify_message


# --- server-side helpers -----------------------------------------------------------------


def test_reset_empties_mailboxes_and_keeps_special_use(
    clean_mailstack: MailStack, ssl_context: ssl.SSLContext
) -> None:
    stack = clean_mailstack
    stack.deliver(ALICE, b"Subject: one\r\n\r\n1\r\n")
    stack.deliver(ALICE, b"Subject: sent\r\n\r\n2\r\n", mailbox="Sent")
    stack.deliver(ALICE, b"Subject: project\r\n\r\n3\r\n", mailbox="Projects/2024.Q1")
    stack.deliver(BOB, b"Subject: bob\r\n\r\n4\r\n")
    assert stack.message_count(ALICE) == 1
    assert stack.message_count(ALICE, "Sent") == 1
    assert stack.message_count(ALICE, "Projects/2024.Q1") == 1

    stack.reset(ALICE)
    assert stack.message_count(ALICE) == 0
    assert stack.message_count(ALICE, "Sent") == 0
    assert sorted(stack.mailboxes(ALICE)) == ["Drafts", "INBOX", "Junk", "Sent", "Trash"]
    assert stack.message_count(BOB) == 1, "reset(ALICE) must leave other users alone"

    # Every user at once (what clean_mailstack runs); the benchmark user's folders are kept
    # (test_test_reset_keeps_the_benchmark_folders).
    stack.reset_test_users()
    assert stack.message_count(BOB) == 0
    # And over IMAP: the special-use folders are still there, INBOX is empty.
    with imaplib.IMAP4_SSL(stack.host, stack.imaps_port, ssl_context=ssl_context) as imap:
        imap.login(ALICE, stack.users[ALICE])
        typ, data = imap.list()
        assert typ == "OK" and any(b"\\Sent" in line for line in data)
        typ, data = imap.select("INBOX")
        assert typ == "OK" and data[0] == b"0"
        imap.logout()


def test_deliver_many_delivers_every_message(clean_mailstack: MailStack, ssl_context: ssl.SSLContext) -> None:
    stack = clean_mailstack
    messages = [
        f"From: {ALICE}\r\nTo: {BOB}\r\nSubject: bulk {i}\r\n\r\nmessage number {i}\r\n".encode()
        for i in range(1000)
    ]
    assert stack.deliver_many(BOB, messages) == 1000
    assert stack.message_count(BOB) == 1000
    with imaplib.IMAP4_SSL(stack.host, stack.imaps_port, ssl_context=ssl_context) as imap:
        imap.login(BOB, stack.users[BOB])
        typ, data = imap.select("INBOX", readonly=True)
        assert typ == "OK" and data[0] == b"1000"
        typ, data = imap.search(None, "SUBJECT", '"bulk 737"')
        assert typ == "OK" and len(data[0].split()) == 1
        typ, data = imap.fetch(data[0], "(BODY.PEEK[TEXT])")
        assert data[0][1] == b"message number 737\r\n"
        imap.logout()


def test_test_reset_keeps_the_benchmark_folders(mailstack: MailStack) -> None:
    # What clean_mailstack does: perf's benchmark folders (10k messages) survive test runs, while
    # its INBOX and special-use folders, where tests deliver, are emptied like everyone's.
    assert PERF in BENCH_USERS
    mailstack.deliver(PERF, b"Subject: bench data\r\n\r\nkeep me\r\n", mailbox="BenchSmoke")
    mailstack.deliver(PERF, b"Subject: test data\r\n\r\ndrop me\r\n")
    mailstack.deliver(PERF, b"Subject: test data\r\n\r\ndrop me\r\n", mailbox="Sent")
    mailstack.deliver(BOB, b"Subject: test data\r\n\r\ndrop me\r\n", mailbox="Projects")
    try:
        mailstack.reset_test_users()
        assert mailstack.message_count(PERF, "BenchSmoke") == 1
        assert mailstack.message_count(PERF) == 0
        assert mailstack.message_count(PERF, "Sent") == 0
        assert "Projects" not in mailstack.mailboxes(BOB)
    finally:
        mailstack.doveadm("mailbox", "delete", "-r", "-s", "-u", PERF, "BenchSmoke")


# --- OAuth2 (XOAUTH2 / OAUTHBEARER, tokens validated by Dovecot without a network service) ---


@pytest.fixture
def oauth2_stack(mailstack: MailStack) -> MailStack:
    if not mailstack.has_oauth2:
        pytest.skip(f"the stack at {mailstack.root} was started before OAuth2 support: restart it "
                    "(scripts/mailstack down; scripts/mailstack up)")
    return mailstack


def _xoauth2(user: str, token: str) -> bytes:
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def test_oauth2_key_is_private_to_dovecot_and_root(oauth2_stack: MailStack) -> None:
    key = oauth2_stack.oauth2_key_file
    assert len(base64.b64decode(key.read_text())) == 32
    assert key.stat().st_mode & 0o777 == 0o640
    assert f"export MAILSTACK_OAUTH2_KEY_FILE='{key}'" in oauth2_stack.script("env").stdout


def test_every_protocol_offers_xoauth2_and_oauthbearer_next_to_passwords(
    oauth2_stack: MailStack, ssl_context: ssl.SSLContext
) -> None:
    stack = oauth2_stack
    with imaplib.IMAP4_SSL(stack.host, stack.imaps_port, ssl_context=ssl_context) as imap:
        imap_caps = set(imap.capabilities)
    pop = poplib.POP3_SSL(stack.host, stack.pop3s_port, context=ssl_context, timeout=10)
    pop_sasl = set(pop.capa()["SASL"])
    pop.quit()
    with smtplib.SMTP_SSL(stack.host, stack.submissions_port, context=ssl_context, timeout=10) as smtp:
        smtp.ehlo()
        smtp_auth = set(smtp.esmtp_features["auth"].split())
    for mechs in ({m.removeprefix("AUTH=") for m in imap_caps if m.startswith("AUTH=")}, pop_sasl, smtp_auth):
        assert {"PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER"} <= mechs


def _imap_xoauth2(stack: MailStack, context: ssl.SSLContext, token: str) -> str:
    with imaplib.IMAP4_SSL(stack.host, stack.imaps_port, ssl_context=context) as imap:
        # The first challenge is empty; a second one is the error status, answered empty.
        typ, _ = imap.authenticate("XOAUTH2", lambda challenge: b"" if challenge else _xoauth2(ALICE, token))
        imap.logout()
    return str(typ)


def test_a_minted_token_logs_in(oauth2_stack: MailStack, ssl_context: ssl.SSLContext) -> None:
    assert _imap_xoauth2(oauth2_stack, ssl_context, oauth2_stack.oauth2_token(ALICE)) == "OK"


@pytest.mark.parametrize("case", ["expired", "wrong key", "another user's", "not yet valid", "the password"])
def test_a_bad_token_is_refused(oauth2_stack: MailStack, ssl_context: ssl.SSLContext, case: str) -> None:
    stack = oauth2_stack
    token = {
        "expired": lambda: stack.oauth2_token(ALICE, expires_in=-60),
        "wrong key": lambda: stack.oauth2_token(ALICE, key=b"k" * 32),
        "another user's": lambda: stack.oauth2_token(BOB),
        "not yet valid": lambda: stack.oauth2_token(ALICE, nbf=int(time.time()) + 600),
        # The oauth2 passdb ends on a refused token (return-fail): it is never tried as a password.
        "the password": lambda: stack.users[ALICE],
    }[case]()
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        _imap_xoauth2(stack, ssl_context, token)


def test_smtp_oauthbearer_goes_through_dovecot_sasl(
    oauth2_stack: MailStack, ssl_context: ssl.SSLContext
) -> None:
    stack = oauth2_stack
    msg = _message(ALICE, BOB)
    with smtplib.SMTP_SSL(stack.host, stack.submissions_port, context=ssl_context, timeout=10) as smtp:
        smtp.ehlo()
        payload = f"n,a={ALICE},\x01auth=Bearer {stack.oauth2_token(ALICE, expires_in=-1)}\x01\x01"
        code, reply = smtp.docmd("AUTH", "OAUTHBEARER " + base64.b64encode(payload.encode()).decode())
        assert code == 334  # the error status as a challenge (RFC 7628) ...
        assert b"invalid_token" in base64.b64decode(reply)
        code, _ = smtp.docmd("AQ==")
        assert code == 535  # ... answered with %x01, then refused
        payload = f"n,a={ALICE},\x01auth=Bearer {stack.oauth2_token(ALICE)}\x01\x01"
        code, reply = smtp.docmd("AUTH", "OAUTHBEARER " + base64.b64encode(payload.encode()).decode())
        assert code == 235, reply
        assert smtp.send_message(msg) == {}

