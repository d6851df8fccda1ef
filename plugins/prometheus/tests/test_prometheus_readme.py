"""The YAML in README.md is a valid configuration for this plugin."""

import re
from pathlib import Path

import yaml

from hookway.config import schema_problems
from hookway_prometheus import PrometheusPlugin

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_yaml_blocks_are_valid_settings():
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)]
    settings = [b["plugins"]["prometheus"] for b in blocks if isinstance(b, dict) and "prometheus" in (b.get("plugins") or {})]
    assert settings, "README.md has no plugins.prometheus example"
    schema = PrometheusPlugin().hookway_config_schema()
    for block in settings:
        assert schema_problems(block, schema, ["plugins", "prometheus"]) == []
