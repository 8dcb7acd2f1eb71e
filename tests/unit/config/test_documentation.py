"""docs/configuration.md documents every setting, and nothing that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

from echo_identity.config import ENV_PREFIX, Settings

DOC = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"


def test_every_setting_has_a_row_in_the_configuration_table() -> None:
    rows = set(re.findall(r"^\| `(ECHO_[A-Z0-9_]+)` \|", DOC.read_text(), flags=re.MULTILINE))
    expected = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    assert rows == expected
