"""A team or key names a plugin bundle; its requests run the global plugins plus the bundle's."""

from __future__ import annotations

import pytest

from hookway import hookimpl
from hookway.config import ConfigError

from governance_testing import chat, client


class Shout:
    """A bundle plugin: upper-cases the user's text before it goes upstream."""

    @hookimpl
    def hookway_configure(self, settings, gateway):
        self.suffix = settings.get("suffix", "")

    @hookimpl
    def hookway_transform_request(self, ctx, target):
        for message in ctx.ir.messages:
            for block in message["content"]:
                if block.get("type") == "text":
                    block["text"] = block["text"].upper() + self.suffix


def test_team_and_key_bundles_select_the_plugins_of_a_request(gov, fake_upstream):
    gw, admin = gov(bundles={"loud": {"shout": {}}, "louder": {"shout": {"suffix": "!"}}},
                    extra_plugins={"shout": Shout})
    loud_team = admin.team(name="loud-team", bundle="loud")
    quiet_team = admin.team(name="quiet-team")
    _, loud = admin.key(team_id=loud_team)
    _, quiet = admin.key(team_id=quiet_team)
    _, own = admin.key(team_id=loud_team, bundle="louder")      # a key's bundle wins over its team's

    sent = []
    for value in (loud, quiet, own):
        chat(client(gw, value))
        sent.append(fake_upstream.last.json["messages"][-1]["content"])
    assert sent[1] == "hello"
    assert "HELLO" in str(sent[0]) and "!" not in str(sent[0])
    assert "HELLO!" in str(sent[2])


def test_an_unknown_bundle_in_the_yaml_stops_the_start(gov):
    with pytest.raises(ConfigError) as exc:
        gov(governance={"teams": [{"id": "t", "bundle": "missing"}]})
    assert "plugins.governance.teams[0].bundle: no bundle named 'missing'" in str(exc.value)
