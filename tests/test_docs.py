"""Every hook must be documented for plugin authors."""

import inspect
import re
from pathlib import Path

from hookway import hookspecs

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"


def hook_names():
    return [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if name.startswith("hookway_")]


def test_there_are_hooks():
    assert len(hook_names()) >= 13


def test_every_hook_has_a_section_with_an_example_in_docs():
    text = DOC.read_text()
    sections = dict(re.findall(r"^### (hookway_\w+)\n(.*?)(?=^### |\Z)", text, flags=re.S | re.M))
    missing = [n for n in hook_names() if n not in sections]
    assert not missing, f"hooks not documented in docs/plugins.md: {missing}"
    no_example = [n for n in hook_names() if "```python" not in sections[n]]
    assert not no_example, f"sections without an example: {no_example}"


def test_every_hook_has_a_docstring_contract():
    for name in hook_names():
        doc = getattr(hookspecs, name).__doc__ or ""
        assert len(doc.strip()) > 60, name


def test_per_request_hook_list_matches_the_specs():
    assert set(hookspecs.PER_REQUEST_HOOKS) <= set(hook_names())
