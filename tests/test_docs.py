"""The README's configuration table lists exactly what the app reads."""

from __future__ import annotations

import re

from app.config import env_keys
from tests.servers import ROOT


def config_table_keys() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([A-Z_]+)` \|", section, re.MULTILINE)


def test_the_readme_configuration_table_lists_every_variable_once():
    keys = config_table_keys()
    assert len(keys) == len(set(keys))
    assert sorted(keys) == sorted(env_keys())
