import pytest

from hookway.config import ConfigError, build, normalise_base_url, read_file


def problems_of(raw):
    with pytest.raises(ConfigError) as info:
        build(raw)
    return info.value.problems


def test_every_problem_is_listed_with_its_path(monkeypatch):
    monkeypatch.delenv("HW_MISSING", raising=False)
    problems = problems_of({
        "server": {"port": "eighty", "colour": "blue"},
        "providers": {"c": {"keys": [{"value": "env.HW_MISSING", "weight": "heavy"}],
                            "network_config": {"base_url": "api.example.com"}}},
        "surprise": 1,
    })
    text = "\n".join(problems)
    assert "server.port: expected integer, found a string 'eighty'" in text
    assert "server.colour: unknown key" in text
    assert "surprise: unknown key" in text
    assert "providers.c.keys[0].weight: expected number" in text
    assert "providers.c.network_config.base_url: expected a value matching" in text
    assert "providers.c.keys[0].value: environment variable HW_MISSING is not set" in text
    assert len(problems) == 6


def test_env_values_are_read(monkeypatch):
    monkeypatch.setenv("HW_KEY", "sk-123")
    cfg = build({"providers": {"cerebras": {"keys": [{"name": "k1", "value": "env.HW_KEY", "models": ["llama-*"]}]}}})
    key = cfg.providers["cerebras"].keys[0]
    assert (key.name, key.value, key.models) == ("k1", "sk-123", ["llama-*"])
    assert cfg.providers["cerebras"].type == "cerebras"


def test_optional_key_with_missing_variable_is_skipped_with_a_warning(monkeypatch):
    monkeypatch.delenv("HW_MISSING", raising=False)
    cfg = build({"providers": {"c": {"keys": [{"value": "env.HW_MISSING", "optional": True}]}}})
    assert cfg.providers["c"].keys == []
    assert any("providers.c" in w for w in cfg.warnings)


def test_short_admin_token_is_refused():
    assert "at least 32 characters" in problems_of({"server": {"admin_token": "short"}})[0]


def test_base_url_without_path_gets_v1():
    assert normalise_base_url("https://api.cerebras.ai") == "https://api.cerebras.ai/v1"
    assert normalise_base_url("https://api.cerebras.ai/") == "https://api.cerebras.ai/v1"
    assert normalise_base_url("http://127.0.0.1:9/custom/v2") == "http://127.0.0.1:9/custom/v2"


def test_json_and_yaml_files(tmp_path):
    (tmp_path / "c.json").write_text('{"server": {"port": 9000}}')
    (tmp_path / "c.yaml").write_text("server:\n  port: 9001\n")
    (tmp_path / "bad.yaml").write_text("server: [unclosed\n")
    assert read_file(tmp_path / "c.json")["server"]["port"] == 9000
    assert read_file(tmp_path / "c.yaml")["server"]["port"] == 9001
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_file(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        read_file(tmp_path / "absent.yaml")
