"""The facade: validation before I/O, environment, endpoint resolution, redaction, lifecycle."""

import asyncio

import pytest

from mailkit import (
    Account,
    AsyncAccount,
    Choice,
    ConfigError,
    Endpoint,
    InsecureWarning,
    MailkitError,
    Profile,
    Protocol,
    SecurityError,
)


def test_explicit_endpoints_are_parsed_and_used_without_io():
    acct = AsyncAccount(
        "alice@example.com",
        password="pw",
        smtp="smtps://smtp.example.com",
        imap="imap+starttls://imap.example.com",
    )
    assert asyncio.run(acct.endpoint("smtp")).url == "smtps://smtp.example.com:465"
    assert asyncio.run(acct.endpoint(Protocol.IMAP)).url == "imap+starttls://imap.example.com:143"


def test_endpoint_of_the_wrong_protocol_is_refused():
    with pytest.raises(ConfigError, match="is imap, expected smtp"):
        AsyncAccount("alice@example.com", smtp="imaps://imap.example.com")


def test_plaintext_endpoint_needs_explicit_opt_in():
    with pytest.raises(SecurityError, match="allow_insecure=True"):
        AsyncAccount("alice@example.com", smtp="smtp+insecure://smtp.example.com")
    with pytest.warns(InsecureWarning):
        acct = AsyncAccount(
            "alice@example.com", smtp="smtp+insecure://smtp.example.com", allow_insecure=True
        )
    assert acct.settings.allow_insecure


@pytest.mark.parametrize("address", ["not-an-address", "a@b", "alice@example.com\r\nRCPT TO:<x@y.z>"])
def test_bad_address_is_a_config_error(address):
    with pytest.raises(ConfigError):
        AsyncAccount(address)


def test_test_domains_only_in_test_environment():
    with pytest.raises(ConfigError, match="special-use"):
        AsyncAccount("alice@example.test")
    assert AsyncAccount("alice@example.test", test_environment=True).address == "alice@example.test"


def test_user_with_newline_rejected_before_io():
    with pytest.raises(ConfigError, match="user name"):
        AsyncAccount("alice@example.com", password="pw", user="alice\r\nA1 LOGOUT")


def test_password_and_oauth2_are_exclusive():
    with pytest.raises(ConfigError, match="either password= or oauth2="):
        AsyncAccount("alice@example.com", password="pw", oauth2=lambda: "tok")


def test_repr_never_shows_the_password():
    acct = Account("alice@example.com", password="hunter2-secret")
    assert "hunter2" not in repr(acct)
    assert "hunter2" not in repr(acct.settings)
    assert "***" in repr(acct)
    acct.close()


def test_login_user_defaults_to_address_and_endpoint_user_wins():
    acct = AsyncAccount("alice@example.com", password="pw", imap="imaps://alice2@imap.example.com")
    endpoint = asyncio.run(acct.endpoint("imap"))
    assert acct.settings.login_user() == "alice@example.com"
    assert acct.settings.login_user(endpoint) == "alice2"


def test_from_env_reads_interface_variables(tmp_path):
    pw_file = tmp_path / "pw"
    pw_file.write_text("from-file\n")
    env = {
        "MAILKIT_ADDRESS": "alice@example.test",
        "MAILKIT_PASSWORD_FILE": str(pw_file),
        "MAILKIT_SMTP": "smtp+starttls://127.0.0.1:10587",
        "MAILKIT_IMAP": "imaps://127.0.0.1:10993",
        "MAILKIT_POP3": "pop3s://127.0.0.1:10995",
        "MAILKIT_TEST_ENVIRONMENT": "1",
    }
    acct = AsyncAccount.from_env(env)
    assert acct.address == "alice@example.test"
    assert acct.settings.credentials is not None
    assert acct.settings.credentials.password == "from-file"  # type: ignore[union-attr]
    assert acct.settings.endpoints[Protocol.POP3].port == 10995
    direct = AsyncAccount.from_env({**env, "MAILKIT_PASSWORD": "direct"})
    assert direct.settings.credentials.password == "direct"  # type: ignore[union-attr]


def test_from_env_overrides_and_missing_address():
    with pytest.raises(ConfigError, match="MAILKIT_ADDRESS"):
        AsyncAccount.from_env({})
    acct = AsyncAccount.from_env({"MAILKIT_ADDRESS": "a@example.com"}, address="b@example.com")
    assert acct.address == "b@example.com"


def test_insecure_env_flag_permits_plaintext():
    env = {
        "MAILKIT_ADDRESS": "a@example.com",
        "MAILKIT_SMTP": "smtp+insecure://127.0.0.1:25",
        "MAILKIT_ALLOW_INSECURE": "1",
    }
    with pytest.warns(InsecureWarning):
        assert AsyncAccount.from_env(env).settings.allow_insecure


def test_profile_supplies_endpoints_and_round_trips_json():
    smtp = Endpoint.parse("smtps://smtp.example.com")
    profile = Profile("alice@example.com", smtp=Choice(smtp, "provider", verified=True))
    again = Profile.from_json(profile.to_json())
    assert again == profile
    acct = AsyncAccount("alice@example.com", profile=again)
    assert asyncio.run(acct.endpoint("smtp")) == smtp
    with pytest.raises(MailkitError, match="no working imap server"):
        asyncio.run(acct.endpoint("imap"))


def test_bad_profile_json_is_a_config_error():
    with pytest.raises(ConfigError, match="not valid JSON"):
        Profile.from_json("{")
    with pytest.raises(ConfigError, match="malformed smtp"):
        Profile.from_json('{"address": "a@example.com", "smtp": {"host": "h"}}')


def test_closed_account_refuses_reuse():
    acct = Account("alice@example.com", smtp="smtps://smtp.example.com")
    assert acct.endpoint("smtp").port == 465  # runs through the portal thread
    acct.close()
    with pytest.raises(MailkitError, match="closed"):
        acct.endpoint("smtp")


def test_async_close_runs_registered_closers_in_reverse():
    order = []

    async def main():
        async with AsyncAccount("alice@example.com") as acct:
            for name in ("first", "second"):
                acct.on_close(lambda name=name: asyncio.sleep(0, order.append(name)))
        with pytest.raises(MailkitError):
            await acct.endpoint("smtp")

    asyncio.run(main())
    assert order == ["second", "first"]
