"""Discovery's result, scripted: for tests about what the account and adapters do with it."""

from __future__ import annotations

from mailkit import Choice, Endpoint, Profile, Protocol


def scripted_profile(address: str, **urls: str) -> Profile:
    """A profile with the given endpoints (``imap="imaps://..."``), each verified."""
    choices = {name: Choice(Endpoint.parse(url), "guess", verified=True) for name, url in urls.items()}
    return Profile(address=address, **choices)


class ScriptedDiscovery:
    """Stands in for the network (as ``AsyncAccount._run_discovery``): each run hands out the next
    profile and records which protocols were asked for."""

    def __init__(self, *profiles: Profile) -> None:
        self.profiles = list(profiles)
        self.asked: list[list[Protocol]] = []

    async def __call__(self, protocols: list[Protocol]) -> Profile:
        self.asked.append(protocols)
        return self.profiles.pop(0)
