"""Composing and preparing messages: headers, encodings, line limits, Bcc, injection."""

from __future__ import annotations

import email
import email.policy
import io
import re

import pytest

from mailkit.errors import ConfigError
from mailkit.message import AddressPolicy, Attachment, check_address, compose, prepare

TEST = AddressPolicy(test_environment=True)


def _parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def _prepared(**kw: object):  # type: ignore[no-untyped-def]
    msg = compose(sender=kw.pop("sender", "alice@example.test"), **kw)  # type: ignore[arg-type]
    return prepare(msg, sender="alice@example.test", policy=TEST)


def test_plain_text_headers_and_envelope() -> None:
    out = _prepared(to="Bob <bob@example.test>", cc=["carol@example.test"], subject="Hi", text="Hello\n")
    assert out.recipients == ("bob@example.test", "carol@example.test")
    assert out.sender == "alice@example.test"
    parsed = _parse(out.data)
    assert parsed["Subject"] == "Hi"
    assert parsed["To"] == "Bob <bob@example.test>"
    assert parsed["Message-ID"] == out.message_id and out.key == out.message_id
    assert parsed["Date"]
    assert parsed.get_content().replace("\r\n", "\n") == "Hello\n"
    assert not out.eight_bit and not out.smtputf8


def test_bcc_is_in_envelope_not_in_headers() -> None:
    out = _prepared(
        to="bob@example.test", bcc=["carol@example.test", "dave@example.test"], subject="s", text="t"
    )
    assert out.recipients == ("bob@example.test", "carol@example.test", "dave@example.test")
    assert b"bcc" not in out.data.lower().split(b"\r\n\r\n")[0]
    assert b"carol" not in out.data


def test_bcc_stripped_from_raw_bytes_too() -> None:
    raw = (
        b"From: a@example.test\r\nTo: b@example.test\r\nBcc: secret@example.test,\r\n"
        b" other@example.test\r\nSubject: x\r\n\r\nbody\r\n"
    )
    out = prepare(raw, sender="a@example.test", policy=TEST)
    assert out.recipients == ("b@example.test", "secret@example.test", "other@example.test")
    assert b"secret" not in out.data and b"other@" not in out.data
    assert out.data.endswith(b"\r\n\r\nbody\r\n")


def test_non_ascii_headers_are_rfc2047_and_bodies_are_encoded() -> None:
    out = _prepared(
        sender=("Jürgen Müller", "alice@example.test"),
        to=[("Zoë", "bob@example.test")],
        subject="Grüße \u2013 résumé",
        text="Hällo wörld\n",
    )
    assert out.data.isascii()  # no 8BITMIME needed
    head = out.data.split(b"\r\n\r\n")[0]
    assert b"=?utf-8?" in head
    parsed = _parse(out.data)
    assert parsed["Subject"] == "Grüße \u2013 résumé"
    assert parsed["From"].addresses[0].display_name == "Jürgen Müller"
    assert parsed["To"].addresses[0].display_name == "Zoë"
    assert parsed["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert parsed.get_content().replace("\r\n", "\n") == "Hällo wörld\n"


def test_long_lines_never_exceed_998_octets_and_crlf_only() -> None:
    text = "x" * 5000 + "\n" + "ä" * 3000 + "\n"
    out = _prepared(to="bob@example.test", subject="y" * 300, text=text, html="<p>" + "z" * 4000 + "</p>")
    assert max(len(line) for line in out.data.split(b"\r\n")) <= 998
    assert out.data.count(b"\n") == out.data.count(b"\r\n") == out.data.count(b"\r")
    parsed = _parse(out.data)
    body = parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert body.replace("\r\n", "\n") == text


def test_raw_bytes_with_a_long_line_are_refused() -> None:
    raw = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: x\r\n\r\n" + b"a" * 999 + b"\r\n"
    with pytest.raises(ConfigError, match="998"):
        prepare(raw, sender="a@example.test", policy=TEST)


def test_raw_bytes_bare_newlines_become_crlf_and_ids_are_added_once() -> None:
    raw = b"From: a@example.test\nTo: b@example.test\nSubject: x\n\nline1\nline2"
    out = prepare(raw, sender="a@example.test", policy=TEST)
    assert out.data.count(b"\n") == out.data.count(b"\r\n")
    parsed = _parse(out.data)
    assert parsed["Message-ID"] == out.message_id
    assert parsed["Date"]
    again = prepare(out.data, sender="a@example.test", policy=TEST)
    assert again.data == out.data and again.message_id == out.message_id  # kept across retries


def test_html_alternative_inline_image_and_attachments() -> None:
    pdf = b"%PDF-1.4 fake"
    out = _prepared(
        to="bob@example.test",
        subject="Report",
        text="see html",
        html='<p><img src="cid:logo"></p>',
        inline={"logo": ("logo.png", b"\x89PNG\r\n\x1a\nfake")},
        attachments=[("résumé été.pdf", pdf), Attachment(io.BytesIO(b"a,b\n1,2\n"), filename="data.csv")],
    )
    parsed = _parse(out.data)
    assert parsed.get_content_type() == "multipart/mixed"
    alt = parsed.get_payload()[0]  # type: ignore[index]
    assert alt.get_content_type() == "multipart/alternative"
    related = alt.get_payload()[1]
    assert related.get_content_type() == "multipart/related"
    image = related.get_payload()[1]
    assert image["Content-ID"] == "<logo>" and image.get_content_type() == "image/png"
    attachments = list(parsed.iter_attachments())
    names = [a.get_filename() for a in attachments]
    assert names == ["résumé été.pdf", "data.csv"]
    assert b"filename*=utf-8''r%C3%A9sum%C3%A9%20%C3%A9t%C3%A9.pdf" in out.data  # RFC 2231
    assert attachments[0].get_content_type() == "application/pdf"
    assert attachments[0].get_content() == pdf
    assert attachments[1].get_content_type() == "text/csv"


def test_attachment_from_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "notes.txt"
    path.write_bytes(b"hello\n")
    out = _prepared(to="bob@example.test", subject="s", text="t", attachments=[path])
    attachment = next(_parse(out.data).iter_attachments())
    assert attachment.get_filename() == "notes.txt"
    assert attachment.get_content_type() == "text/plain"
    with pytest.raises(ConfigError, match="cannot read"):
        _prepared(to="bob@example.test", subject="s", text="t", attachments=[tmp_path / "missing.bin"])


def test_inline_without_html_is_refused() -> None:
    with pytest.raises(ConfigError, match="HTML"):
        compose(sender="a@example.test", to="b@example.test", text="t", inline={"x": ("x.png", b"1")})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"subject": "hi\r\nBcc: victim@example.test"},
        {"subject": "hi\nX: y"},
        {"subject": "nul\x00"},
        {"to": "bob@example.test\r\nRCPT TO:<x@example.test>"},
        {"to": ("Bob\r\nX-Evil: 1", "bob@example.test")},
        {"headers": {"X-Custom": "a\r\nBcc: v@example.test"}},
        {"headers": {"X Bad Name": "v"}},
        {"attachments": [("evil\r\n.pdf", b"x")]},
    ],
)
def test_header_injection_is_rejected(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {
        "sender": "alice@example.test",
        "to": "bob@example.test",
        "subject": "s",
        "text": "t",
    }
    base.update(kwargs)
    with pytest.raises(ConfigError):
        compose(**base)  # type: ignore[arg-type]


def test_envelope_injection_is_rejected() -> None:
    msg = compose(sender="alice@example.test", to="bob@example.test", subject="s", text="t")
    with pytest.raises(ConfigError):
        prepare(msg, sender="alice@example.test\r\nRCPT TO:<x@example.test>", policy=TEST)
    with pytest.raises(ConfigError):
        prepare(msg, sender="alice@example.test", recipients=["b@example.test>\r\nDATA"], policy=TEST)


def test_address_validation_and_test_environment() -> None:
    with pytest.raises(ConfigError):
        check_address("bob@example.test")  # special-use domain refused by default
    assert check_address("bob@example.test", TEST) == ("bob@example.test", False)
    with pytest.raises(ConfigError):
        check_address("not an address", TEST)
    assert check_address("bob@bücher.example.com") == ("bob@xn--bcher-kva.example.com", False)
    assert check_address("josé@example.com") == ("josé@example.com", True)


def test_internationalized_address_needs_smtputf8() -> None:
    out = _prepared(to="José <josé@example.test>", subject="s", text="t")
    assert out.smtputf8 and out.recipients == ("josé@example.test",)
    assert "josé@example.test".encode() in out.data  # raw UTF-8 header, not an encoded-word
    assert not re.search(rb"=\?utf-8\?[qb]\?jos", out.data, re.I)


def test_custom_headers_and_fixed_ids() -> None:
    out = _prepared(
        to="bob@example.test",
        subject="s",
        text="t",
        headers={"X-Campaign": "7"},
        message_id="<fixed@example.test>",
        date="Fri, 27 Nov 2026 08:00:00 +0000",
    )
    parsed = _parse(out.data)
    assert parsed["X-Campaign"] == "7"
    assert out.message_id == "<fixed@example.test>" == parsed["Message-ID"]
    assert parsed["Date"] == "Fri, 27 Nov 2026 08:00:00 +0000"


def test_no_recipients_is_an_error() -> None:
    msg = compose(sender="alice@example.test", subject="s", text="t")
    with pytest.raises(ConfigError, match="recipient"):
        prepare(msg, sender="alice@example.test", policy=TEST)
