"""SASL payloads: the exact bytes each mechanism sends (shared by SMTP, IMAP and POP3)."""

import pytest

from mailkit import _sasl


def test_plain_has_an_empty_authzid_and_utf8():
    assert _sasl.plain("dave@example.test", "pässwörd") == b"\0dave@example.test\0p\xc3\xa4ssw\xc3\xb6rd"


def test_xoauth2_layout():
    assert _sasl.xoauth2("a@b.test", "tok") == b"user=a@b.test\x01auth=Bearer tok\x01\x01"


def test_oauthbearer_layout_with_and_without_host_and_port():
    assert _sasl.oauthbearer("a@b.test", "tok", "imap.b.test", 993) == (
        b"n,a=a@b.test,\x01host=imap.b.test\x01port=993\x01auth=Bearer tok\x01\x01"
    )
    assert _sasl.oauthbearer("a@b.test", "tok") == b"n,a=a@b.test,\x01auth=Bearer tok\x01\x01"


def test_oauthbearer_escapes_the_authzid():
    # RFC 5801: "=" becomes "=3D" and "," becomes "=2C"; escaping "=" first keeps "=2C" intact
    assert _sasl.oauthbearer("a=b,c@d.test", "t").startswith(b"n,a=a=3Db=2Cc@d.test,\x01")


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ({"XOAUTH2", "OAUTHBEARER", "PLAIN"}, "OAUTHBEARER"),
        ({"XOAUTH2", "PLAIN"}, "XOAUTH2"),
        ({"PLAIN", "LOGIN"}, None),
        (set(), None),
    ],
)
def test_oauthbearer_is_preferred(offered, chosen):
    assert _sasl.choose_oauth(offered) == chosen


def test_the_error_challenge_is_never_answered_with_the_token():
    assert _sasl.oauth_error_answer("OAUTHBEARER") == b"\x01"
    assert _sasl.oauth_error_answer("xoauth2") == b""
