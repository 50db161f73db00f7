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
from tests.scripted_discovery import ScriptedDiscovery, scripted_profile


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


# --- a discovered endpoint that stops answering is found again (connect_with) ------------------


def _opener(dead: set[str], error: Exception, used: list[str]):
    async def opener(endpoint: Endpoint) -> str:
        used.append(endpoint.url)
        if endpoint.url in dead:
            raise error
        return endpoint.url

    return opener


async def test_a_discovered_endpoint_that_stops_answering_is_rediscovered_once(monkeypatch, caplog):
    from mailkit import ConnectError

    address = "alice@example.com"
    first = scripted_profile(address, imap="imaps://old.example.com", smtp="smtps://smtp.example.com")
    second = scripted_profile(address, imap="imap+starttls://new.example.com", smtp="smtps://other.example.com")
    discovery = ScriptedDiscovery(first, second)
    acct = AsyncAccount(address, password="pw")
    monkeypatch.setattr(acct, "_run_discovery", discovery)
    used: list[str] = []
    opener = _opener({"imaps://old.example.com:993"}, ConnectError("refused"), used)

    assert await acct.connect_with("imap", opener) == "imap+starttls://new.example.com:143"
    assert used == ["imaps://old.example.com:993", "imap+starttls://new.example.com:143"]
    assert discovery.asked[1] == [Protocol.IMAP]  # only the failed protocol is looked for again
    assert (await acct.endpoint("imap")).host == "new.example.com"  # later connections use it too
    assert (await acct.endpoint("smtp")).host == "smtp.example.com"  # the others are kept
    assert "no longer answers" in caplog.text and "pw" not in caplog.text


@pytest.mark.parametrize("kind", ["explicit", "profile"])
async def test_endpoints_the_caller_chose_are_never_replaced(monkeypatch, kind):
    from mailkit import ConnectError

    address = "alice@example.com"
    options = (
        {"imap": "imaps://mine.example.com"}
        if kind == "explicit"
        else {"profile": scripted_profile(address, imap="imaps://mine.example.com")}
    )
    acct = AsyncAccount(address, password="pw", **options)
    discovery = ScriptedDiscovery(scripted_profile(address, imap="imaps://elsewhere.example.com"))
    monkeypatch.setattr(acct, "_run_discovery", discovery)
    used: list[str] = []
    with pytest.raises(ConnectError):
        await acct.connect_with("imap", _opener({"imaps://mine.example.com:993"}, ConnectError("x"), used))
    assert used == ["imaps://mine.example.com:993"] and discovery.asked == []


async def test_rediscovery_that_finds_the_same_dead_endpoint_raises_the_original_error(monkeypatch):
    from mailkit import TimeoutError as MailkitTimeout

    address = "alice@example.com"
    same = scripted_profile(address, pop3="pop3s://pop.example.com")
    acct = AsyncAccount(address, password="pw")
    discovery = ScriptedDiscovery(same, same)
    monkeypatch.setattr(acct, "_run_discovery", discovery)
    used: list[str] = []
    original = MailkitTimeout("connect timed out")
    with pytest.raises(MailkitTimeout) as caught:
        await acct.connect_with("pop3", _opener({"pop3s://pop.example.com:995"}, original, used))
    assert caught.value is original
    assert used == ["pop3s://pop.example.com:995"] and len(discovery.asked) == 2


async def test_a_server_that_answers_no_is_not_rediscovered(monkeypatch):
    from mailkit import AuthenticationError, CertificateError

    address = "alice@example.com"
    for error in (AuthenticationError("bad password"), CertificateError("expired")):
        acct = AsyncAccount(address, password="pw")
        discovery = ScriptedDiscovery(scripted_profile(address, smtp="smtps://smtp.example.com"))
        monkeypatch.setattr(acct, "_run_discovery", discovery)
        with pytest.raises(type(error)):
            await acct.connect_with("smtp", _opener({"smtps://smtp.example.com:465"}, error, []))
        assert len(discovery.asked) == 1  # the first discovery only
