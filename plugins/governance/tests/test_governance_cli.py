"""``hookway keys create|list|revoke`` against the same store as the gateway."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import openai
import pytest
import yaml

from hookway.cli import main

from governance_testing import Admin, chat, client, gateway_config, plugin_of, wait_for


@pytest.fixture
def config_file(fake_upstream, tmp_path):
    cfg = gateway_config(fake_upstream, tmp_path)
    cfg["server"]["data_dir"] = "data"           # relative to the config file, as in gateway.yaml
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg


def run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()                 # drop what the gateway thread logged so far
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_create_list_revoke_with_a_running_gateway(config_file, start_gateway, tmp_path, capsys):
    path, cfg = config_file
    code, out, err = run(capsys, "keys", "create", "--config", str(path), "--name", "ci",
                         "--budget", "1", "--budget-reset", "1d", "--requests", "100/1m",
                         "--provider", "up:m,llama-*")
    assert code == 0 and "shown only this once" in err
    value = last_line(out)
    assert value.startswith("sk-hw-")
    assert (tmp_path / "data" / "governance.db").exists()

    cfg["server"]["data_dir"] = str(tmp_path / "data")
    gw = start_gateway(cfg)
    c = client(gw, value)
    chat(c)
    with pytest.raises(openai.PermissionDeniedError):
        chat(c, "up2/m2")
    vk = Admin(gw.url).get("/api/governance/virtual-keys").json()["virtual_keys"][0]
    assert vk["source"] == "cli" and vk["rate_limit"]["request_max_limit"] == 100
    assert vk["provider_configs"][0]["allowed_models"] == ["m", "llama-*"]

    # Created while the gateway runs: picked up at its next sync.
    code, out, _ = run(capsys, "keys", "create", "--config", str(path), "--name", "later", "--json")
    later = json.loads(last_line(out))
    assert wait_for(lambda: later["id"] in plugin_of(gw).engine.keys)
    chat(client(gw, later["value"]))

    code, out, _ = run(capsys, "keys", "list", "--config", str(path))
    assert code == 0 and "ci" in out and "later" in out and value not in out and value[:10] in out
    code, out, _ = run(capsys, "keys", "list", "--config", str(path), "--json")
    listed = {k["name"]: k for k in json.loads(out[out.index("["):])}
    assert listed["ci"]["state"] == "active" and listed["ci"]["budgets"][0]["max_limit"] == 1

    code, out, _ = run(capsys, "keys", "revoke", "ci", "--config", str(path))
    assert code == 0 and "revoked" in out
    assert wait_for(lambda: not plugin_of(gw).engine.keys[vk["id"]].is_active)
    with pytest.raises(openai.PermissionDeniedError):
        chat(c)
    code, out, _ = run(capsys, "keys", "revoke", later["id"], "--delete", "--config", str(path))
    assert code == 0 and "deleted" in out
    assert wait_for(lambda: later["id"] not in plugin_of(gw).engine.keys)
    with pytest.raises(openai.AuthenticationError):
        chat(client(gw, later["value"]))


def test_cli_errors_are_reported_not_raised(config_file, capsys):
    path, _ = config_file
    code, _, err = run(capsys, "keys", "create", "--config", str(path), "--name", "x", "--team", "nope")
    assert code == 2 and "no team with id 'nope'" in err
    code, _, err = run(capsys, "keys", "create", "--config", str(path), "--name", "x", "--requests", "ten")
    assert code == 2 and "N/PERIOD" in err
    code, _, err = run(capsys, "keys", "revoke", "ghost", "--config", str(path))
    assert code == 1 and "no virtual key" in err or "no store" in err
    code, _, err = run(capsys, "keys", "list", "--config", str(path.parent / "missing.yaml"))
    assert code == 2 and "cannot read" in err


def test_the_installed_command_runs(config_file):
    path, _ = config_file
    hookway = os.path.join(os.path.dirname(sys.executable), "hookway")
    out = subprocess.run([hookway, "keys", "list", "--config", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "no virtual keys" in out.stdout


def test_a_store_that_cannot_be_written_is_a_clear_error(config_file, tmp_path, capsys):
    path, _ = config_file
    (tmp_path / "data" / "governance.db").mkdir(parents=True)      # not a file SQLite can open
    code, out, err = run(capsys, "keys", "create", "--config", str(path), "--name", "ci")
    assert code == 1 and out == ""
    assert last_line(err) == ("hookway keys: the governance store failed (unable to open database file); "
                              "nothing was changed")
