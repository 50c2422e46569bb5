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


def test_the_refusal_says_links_are_followed_and_that_paru_data_root_replaces_the_default(tmp_path):
    from core.data.paths import confine_to_roots

    root = tmp_path / "data"
    root.mkdir()
    (root / "linked").symlink_to(tmp_path)  # a link under the root whose real folder is outside it
    with pytest.raises(ValueError, match="outside the data folders") as refusal:
        confine_to_roots(root / "linked", [root])
    message = str(refusal.value)
    assert "the real folder must be under one of them too" in message
    assert "PARU_DATA_ROOT replaces the default data folder" in message
    inside = root / "real"
    inside.mkdir()
    (root / "alias").symlink_to(inside)
    assert confine_to_roots(root / "alias", [root]) == inside.resolve()


def test_film_paths_of_a_run_follow_links_into_a_data_root_but_never_out(tmp_path, monkeypatch):
    from core.data.paths import film_under_root

    data_root = tmp_path / "data"
    (data_root / "ds" / "Normal").mkdir(parents=True)
    film = data_root / "ds" / "Normal" / "a.png"
    film.write_bytes(b"film")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"secret")
    layout = tmp_path / "layout" / "train" / "Normal"  # a core split layout outside the data root
    layout.mkdir(parents=True)
    (layout / "a.png").symlink_to(film)
    (layout / "b.png").symlink_to(secret)
    monkeypatch.setenv("PARU_DATA_ROOT", str(data_root))
    root = tmp_path / "layout"
    assert film_under_root(root, "train/Normal/a.png") == film.resolve()
    assert film_under_root(root, "train/Normal/b.png") is None
    assert film_under_root(root, "../secret.png") is None
