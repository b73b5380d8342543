"""Prompt templates, kept as package files so that every change is a visible diff.

``render(name, **fields)`` fills a template's ``{field}`` placeholders; golden tests
(tests/unit/test_prompts.py) pin the rendered text.
"""

from __future__ import annotations

import functools
import re
import string
from importlib import resources


@functools.cache
def template(name: str) -> str:
    return (resources.files(__package__) / f"{name}.txt").read_text()


def fields(name: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template(name)) if f}


def render(name: str, **values: str) -> str:
    """Fill a template; a missing or unexpected field is an error (no silent blanks)."""
    expected = fields(name)
    if set(values) != expected:
        raise KeyError(f"template {name!r} takes {sorted(expected)}, got {sorted(values)}")
    # One pass over the template only: braces inside the values (code, JSON, another
    # placeholder's name) are never interpreted, unlike str.format or chained replace.
    return _FIELD.sub(lambda m: values[m.group(1)], template(name))


_FIELD = re.compile(r"\{(\w+)\}")
