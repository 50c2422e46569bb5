"""Path confinement: typed folders stay inside the data roots."""

from __future__ import annotations

import pytest


def test_typed_folders_cannot_escape_the_data_roots(tmp_path):
    from core.data.paths import confine_to_roots

    root = tmp_path / "data"
    (root / "nih").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    assert confine_to_roots(root / "nih", [root]) == (root / "nih").resolve()
    for attempt in (root / ".." / "secret", root / "escape", "/etc"):
        with pytest.raises(ValueError, match="outside the data folders"):
            confine_to_roots(attempt, [root])
