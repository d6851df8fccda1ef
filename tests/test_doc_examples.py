"""The docs' examples are checked against the code.

* Every ```yaml block of README.md, docs/*.md and plugins/*/README.md is a config `hookway check`
  accepts. A block that is a whole config (top keys among server, plugins, providers, bundles) is
  checked as written; a fragment is checked inside the shipped gateway.yaml: a plugin README's
  block of that plugin's settings as `plugins: {<plugin>: ...}`, a provider block under
  `providers:`, a list as the plugin's one list-of-objects setting (routing's `rules`). A block
  that is not a hookway config (a Prometheus or docker-compose snippet) says so with
  ``<!-- not-a-config -->`` on the line before its fence.
* Settings shown commented out in those blocks exist.
* gateway.yaml passes `hookway check`, with or without the provider keys in the environment.
* Every setting a schema accepts is mentioned in its README: each plugin's settings (and the
  `settings:` of the provider types it registers) in plugins/<name>/README.md, the core's in
  README.md.
* Every `hookway ...` command line in a shell block parses.
"""

from __future__ import annotations

import inspect
import re
import shlex
import textwrap
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import yaml

import hookway.cli
import hookway.plugins
from hookway.config import CORE_SCHEMA, PROVIDER_SCHEMA

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "plugins").glob("*/README.md"))]
SHIPPED = ROOT / "gateway.yaml"
NOT_A_CONFIG = "<!-- not-a-config -->"
CONFIG_KEYS = set(CORE_SCHEMA["properties"])
PROVIDER_KEYS = set(PROVIDER_SCHEMA["properties"])
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.M | re.S)
ENV_REF = re.compile(r"\benv\.([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    lang: str
    text: str
    marked: bool          # preceded by <!-- not-a-config -->

    def __str__(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def plugin(self) -> str | None:
        """The plugin whose README holds the block."""
        return self.doc.parent.name if self.doc.parent.parent == ROOT / "plugins" else None


def fenced_blocks(*langs: str, docs=DOCS) -> list[Block]:
    """The fenced blocks of these languages (all, when none is given)."""
    blocks = []
    for doc in docs:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            if not langs or m["lang"] in langs:
                blocks.append(Block(doc, text.count("\n", 0, m.start()) + 1, m["lang"],
                                    textwrap.dedent(m["body"]), text[:m.start()].rstrip().endswith(NOT_A_CONFIG)))
    return blocks


# --- what the installed plugins accept ---------------------------------------------------------

def _instance(name: str):
    obj = hookway.plugins.discover()[name].load()
    return obj if inspect.ismodule(obj) else obj()


@cache
def settings_schema(plugin: str) -> dict:
    fn = getattr(_instance(plugin), "hookway_config_schema", None)
    return (fn() if fn else None) or {}


@cache
def adapter_classes(plugin: str) -> dict[str, type]:
    """Provider type -> adapter class, for the types ``plugin`` registers."""
    types: dict[str, type] = {}
    fn = getattr(_instance(plugin), "hookway_register_providers", None)
    if fn is not None:
        fn(register=types.__setitem__)
    return types


def setting_names(schema) -> set[str]:
    """Every property name in a JSON Schema, nested objects, list items and map values included."""
    names: set[str] = set()
    if isinstance(schema, dict):
        for name, sub in (schema.get("properties") or {}).items():
            names.add(name)
            names |= setting_names(sub)
        for key in ("items", "additionalProperties"):
            names |= setting_names(schema.get(key))
        for key in ("oneOf", "anyOf", "allOf"):
            for sub in schema.get(key) or []:
                names |= setting_names(sub)
    return names


def all_setting_names() -> set[str]:
    names = setting_names(CORE_SCHEMA)
    for plugin in hookway.plugins.discover():
        names |= setting_names(settings_schema(plugin))
        for cls in adapter_classes(plugin).values():
            names |= setting_names(cls.settings_schema)
    return names


# --- the example plugins docs/plugins.md writes ------------------------------------------------

class _DocEntryPoint:
    """Stands for an installed entry point of a plugin defined in the docs."""

    dist = None

    def __init__(self, name: str, cls: type):
        self.name, self.value, self.cls = name, f"docs:{cls.__name__}", cls

    def load(self):
        return self.cls


@cache
def doc_plugins() -> dict[str, type]:
    """The plugins docs/plugins.md builds: the entry points its pyproject.toml block declares,
    with the classes its python blocks define."""
    doc = ROOT / "docs" / "plugins.md"
    declared = {}
    for block in fenced_blocks("toml", docs=[doc]):
        declared |= tomllib.loads(block.text).get("project", {}).get("entry-points", {}).get("hookway", {})
    plugins = {}
    for name, target in declared.items():
        class_name = target.rpartition(":")[2]
        namespace: dict = {}
        for block in fenced_blocks("python", docs=[doc]):
            if f"class {class_name}" in block.text:
                exec(compile(block.text, str(block), "exec"), namespace)
        plugins[name] = namespace[class_name]
    return plugins


@pytest.fixture
def with_doc_plugins(monkeypatch):
    installed = hookway.plugins.discover()
    extra = {name: _DocEntryPoint(name, cls) for name, cls in doc_plugins().items() if name not in installed}
    monkeypatch.setattr(hookway.plugins, "discover", lambda: {**installed, **extra})
    monkeypatch.setattr(hookway.cli, "discover", lambda: {**installed, **extra})


def test_the_docs_plugin_example_is_found():
    assert set(doc_plugins()) == {"shout"}
    assert doc_plugins()["shout"]().hookway_config_schema()["properties"] == {"enabled": {"type": "boolean"}}


# --- every YAML example is a config ------------------------------------------------------------

def as_config(block: Block) -> tuple[str, str]:
    """(how the block was read, the text of the whole config to check)."""
    data = yaml.safe_load(block.text)
    if isinstance(data, dict) and data and set(data) <= CONFIG_KEYS:
        return "a whole config", block.text
    config = yaml.safe_load(SHIPPED.read_text())
    plugin = block.plugin
    if plugin and isinstance(data, dict) and set(data) <= set(settings_schema(plugin).get("properties", {})):
        config["plugins"][plugin] = data
        how = f"the settings of plugins.{plugin}, in gateway.yaml"
    elif isinstance(data, dict) and data and set(data) <= PROVIDER_KEYS:
        name = plugin or "example"
        config["providers"][name] = data
        how = f"the provider block providers.{name}, in gateway.yaml"
    elif plugin and isinstance(data, list) and len(lists := [
            k for k, s in settings_schema(plugin).get("properties", {}).items()
            if s.get("type") == "array" and s.get("items", {}).get("type") == "object"]) == 1:
        config["plugins"][plugin] = {lists[0]: data}
        how = f"plugins.{plugin}.{lists[0]}, in gateway.yaml"
    else:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        pytest.fail(f"{block}: cannot tell what config this block is ({keys}): not a whole config "
                    f"({', '.join(sorted(CONFIG_KEYS))}), nor {plugin or 'a plugin'}'s settings, nor a "
                    f"provider block. Show it whole, or mark it {NOT_A_CONFIG} if it is no hookway config.")
    return how, yaml.safe_dump(config, sort_keys=False)


def set_dummy_env(text: str, monkeypatch) -> None:
    """A value for each env.NAME the config names, long enough for an admin token or a virtual key."""
    for name in set(ENV_REF.findall(text)):
        monkeypatch.setenv(name, f"doc-example-{name.lower()}-".ljust(48, "x"))


def check(text: str, tmp_path: Path, capsys) -> tuple[int, str]:
    """`hookway check` on a config text: (exit code, what it printed)."""
    path = tmp_path / "gateway.yaml"     # server.data_dir is relative to it: nothing lands in the repo
    path.write_text(text)
    capsys.readouterr()
    rc = hookway.cli.main(["check", "--config", str(path)])
    out = capsys.readouterr()
    return rc, out.out + out.err


YAML_BLOCKS = fenced_blocks("yaml", "yml")


def test_every_readme_shows_a_config():
    shown = {b.doc for b in YAML_BLOCKS if not b.marked}
    missing = [str(d.relative_to(ROOT)) for d in DOCS if d.name == "README.md" and d not in shown]
    assert not missing, f"no ```yaml config example in: {missing}"


@pytest.mark.parametrize("block", [b for b in YAML_BLOCKS if not b.marked], ids=str)
def test_yaml_example_is_a_config_hookway_check_accepts(block, tmp_path, monkeypatch, capsys, with_doc_plugins):
    how, text = as_config(block)
    set_dummy_env(text, monkeypatch)
    rc, output = check(text, tmp_path, capsys)
    assert rc == 0, f"{block}, read as {how}, fails `hookway check`:\n{output}"


@pytest.mark.parametrize("readme,text,how,ok", [
    ("README.md", "server: {port: 8080}\n", "a whole config", True),
    ("README.md", "server: {prot: 8080}\n", "a whole config", False),
    ("plugins/logstore/README.md", "retention: 7d\n", "the settings of plugins.logstore", True),
    ("plugins/logstore/README.md", "retention: soon\n", "the settings of plugins.logstore", False),
    ("plugins/cerebras/README.md", "keys: [{value: env.CEREBRAS_API_KEY}]\nsettings: {supports_top_k: true}\n",
     "the provider block providers.cerebras", True),
    ("plugins/cerebras/README.md", "settings: {keep_thinking: true}\n", "the provider block providers.cerebras", False),
    ("plugins/routing/README.md", "- {match: {model: m}, targets: [cerebras/llama-3.3-70b]}\n", "plugins.routing.rules", True),
    ("plugins/routing/README.md", "- {match: {model: m}, targets: [cerebras/x], fallbacks: [nowhere/x]}\n", "plugins.routing.rules", False),
])
def test_how_blocks_are_read_and_checked(readme, text, how, ok, tmp_path, monkeypatch, capsys):
    """The reading of whole configs and of each kind of fragment, and that a wrong one fails."""
    read_as, config = as_config(Block(ROOT / readme, 1, "yaml", text, marked=False))
    assert read_as.startswith(how)
    set_dummy_env(config, monkeypatch)
    rc, output = check(config, tmp_path, capsys)
    assert (rc == 0) is ok, output


def test_a_block_of_unknown_shape_is_refused():
    with pytest.raises(pytest.fail.Exception, match="cannot tell what config this block is"):
        as_config(Block(ROOT / "plugins/logstore/README.md", 1, "yaml", "services: {db: {}}\n", marked=False))


def test_blocks_marked_not_a_config_are_no_config():
    """The marker cannot hide a broken config: a marked block has none of a config's keys."""
    known = CONFIG_KEYS | PROVIDER_KEYS | {k for p in hookway.plugins.discover()
                                          for k in settings_schema(p).get("properties", {})}
    for block in fenced_blocks():
        if block.marked:
            data = yaml.safe_load(block.text) if block.lang in ("yaml", "yml") else None
            assert not (isinstance(data, dict) and set(data) & known), \
                f"{block} is marked {NOT_A_CONFIG} but has config keys {sorted(set(data) & known)}"
    for doc in DOCS:
        text = doc.read_text()
        marked = sum(b.marked for b in fenced_blocks(docs=[doc]))
        markers = len(re.findall(rf"^[ \t]*{re.escape(NOT_A_CONFIG)}[ \t]*$", text, re.M))
        assert markers == marked, f"{doc.relative_to(ROOT)}: a {NOT_A_CONFIG} line not right before a fence"


def test_settings_shown_commented_out_exist():
    known = all_setting_names()
    commented = re.compile(r"^\s*#\s*([A-Za-z_][\w-]*):\s")
    unknown = []
    sources = [(b.doc, b.line + 1, b.text) for b in YAML_BLOCKS if not b.marked]
    for doc, first_line, text in sources + [(SHIPPED, 1, SHIPPED.read_text())]:
        for i, line in enumerate(text.splitlines()):
            m = commented.match(line)
            if m and m[1] not in known:
                unknown.append(f"{doc.relative_to(ROOT)}:{first_line + i}: {line.strip()}")
    assert not unknown, "commented-out settings that no schema accepts:\n" + "\n".join(unknown)


# --- the shipped config ------------------------------------------------------------------------

@pytest.mark.parametrize("keys_set", [False, True], ids=["no-provider-keys", "provider-keys"])
def test_gateway_yaml_passes_check(keys_set, tmp_path, monkeypatch, capsys):
    text = SHIPPED.read_text()
    if keys_set:
        set_dummy_env(text, monkeypatch)
    else:               # a fresh machine: `make run` before any key is exported
        for name in set(ENV_REF.findall(text)):
            monkeypatch.delenv(name, raising=False)
    rc, output = check(text, tmp_path, capsys)
    assert rc == 0, output
    assert "gateway.yaml: ok (3 provider(s)" in output


# --- every setting is documented ---------------------------------------------------------------

def mentioned(name: str, text: str) -> bool:
    """As a YAML key (``name:``) or as code (```name``` , ```store.name```)."""
    return re.search(rf"(?<![\w-]){re.escape(name)}(?=\s*:|`)", text) is not None


@pytest.mark.parametrize("plugin", sorted(hookway.plugins.discover()))
def test_every_setting_of_a_plugin_is_in_its_readme(plugin):
    readme = ROOT / "plugins" / plugin / "README.md"
    text = readme.read_text()
    missing = sorted(n for n in setting_names(settings_schema(plugin)) if not mentioned(n, text))
    assert not missing, f"plugins/{plugin}/README.md does not mention the settings {missing}"
    for type_name, cls in adapter_classes(plugin).items():
        missing = sorted(n for n in setting_names(cls.settings_schema) if not mentioned(n, text))
        assert not missing, (f"plugins/{plugin}/README.md does not mention the `settings:` {missing} "
                             f"of provider type {type_name}")


def test_every_core_setting_is_in_the_readme():
    text = (ROOT / "README.md").read_text()
    missing = sorted(n for n in setting_names(CORE_SCHEMA) if not mentioned(n, text))
    assert not missing, f"README.md does not mention the settings {missing}"


# --- command lines -----------------------------------------------------------------------------

def command_lines() -> list[tuple[str, list[str]]]:
    lines = []
    for block in fenced_blocks("sh", "bash", "shell", "console"):
        for line in block.text.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if not re.match(r"(\S*/)?hookway\s", line):
                continue
            argv = shlex.split(line, comments=True)
            while argv[-1] in ("&", "&&"):
                argv.pop()
            lines.append((f"{block}: {line}", argv[1:]))
    return lines


def test_docs_show_hookway_command_lines():
    assert len(command_lines()) >= 3


@pytest.mark.parametrize("where,argv", command_lines(), ids=[w for w, _ in command_lines()])
def test_command_line_in_docs_parses(where, argv, capsys):
    try:
        hookway.cli.build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}\n{capsys.readouterr().err}")
