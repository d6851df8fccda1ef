"""The YAML in README.md is a valid configuration for this plugin."""

import re
from pathlib import Path

import yaml

from hookway.config import schema_problems
from hookway_logstore import LogstorePlugin

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_yaml_blocks_are_valid_settings():
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)]
    settings = [b["plugins"]["logstore"] for b in blocks if isinstance(b, dict) and "logstore" in (b.get("plugins") or {})]
    assert settings, "README.md has no plugins.logstore example"
    schema = LogstorePlugin().hookway_config_schema()
    for block in settings:
        assert schema_problems(block, schema, ["plugins", "logstore"]) == []
