"""Review tags: a person's verdict on each misclassified test film of a run, kept in <run>/review_tags.json.

The file maps a film's path (relative to the dataset root, as in predictions.csv) to
{"tag": one of TAGS, "note": free text, "label": true class, "predicted": predicted class, "updated": ISO time}.
It is written atomically, so a reader never sees half a file. Every change also rewrites the run's
model card, whose "Failure modes seen in review" section summarises the tags.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from core.runs.artifacts import TAGS_FILE_NAME, now_iso, read_json, write_json_atomic
from core.runs.card import refresh_model_card_quietly

TAGS = ("untagged", "label error", "model error", "ambiguous", "image quality")


def load_tags(run_dir: str | os.PathLike) -> dict[str, dict]:
    """The run's tags ({} when none were saved or the file is unreadable)."""
    data = read_json(Path(run_dir) / TAGS_FILE_NAME, {})
    return data if isinstance(data, dict) else {}


def save_tag(run_dir: str | os.PathLike, file: str, tag: str, note: str = "", **details) -> dict[str, dict]:
    """Set one film's tag and note and write the file; returns all tags.

    Raises ValueError for a tag not in TAGS. An "untagged" film with no note is removed from the file.
    """
    if tag not in TAGS:
        raise ValueError(f"Got tag={tag!r}; must be one of {TAGS}.")
    tags = load_tags(run_dir)
    if tag == "untagged" and not note.strip():
        tags.pop(file, None)
    else:
        tags[file] = {**details, "tag": tag, "note": note, "updated": now_iso()}
    save_tags(run_dir, tags)
    refresh_model_card_quietly(run_dir)
    return tags


def save_tags(run_dir: str | os.PathLike, tags: dict[str, dict]) -> None:
    """Write all tags atomically to <run_dir>/review_tags.json."""
    write_json_atomic(Path(run_dir) / TAGS_FILE_NAME, tags)


def tags_csv(tags: dict[str, dict]) -> bytes:
    """Tags as CSV bytes: file, label, predicted, tag, note, updated."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["file", "label", "predicted", "tag", "note", "updated"])
    for file, entry in sorted(tags.items()):
        writer.writerow([file, entry.get("label", ""), entry.get("predicted", ""), entry.get("tag", ""),
                         entry.get("note", ""), entry.get("updated", "")])
    return buffer.getvalue().encode()
