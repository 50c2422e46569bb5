"""Review tags: a person's verdict on each misclassified test film of a run.

The tags file maps a film's path (relative to the dataset root, as in predictions.csv) to
{"tag": one of TAGS, "note": free text, "label": true class, "predicted": predicted class, "updated": ISO time}.
It is <run>/review_tags.json for the user's own runs, and <user data dir>/tags/<run_id>.json for a shipped
run (core.runs.registry.is_shipped_run), whose tracked files stay as they are in git.

A change reads, edits and rewrites the file under an exclusive lock on a lock file beside it (fcntl.flock),
so reviewers tagging at once never lose each other's tags; the file is replaced atomically, so a reader
never sees half of it. A change to a user's run also rewrites that run's model card, whose "Failure modes
seen in review" section summarises the tags.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
from contextlib import contextmanager
from pathlib import Path

from core.runs.artifacts import TAGS_FILE_NAME, now_iso, write_json_atomic
from core.runs.card import refresh_model_card_quietly
from core.runs.checks import read_json_strict
from core.runs.registry import added_file_path

TAGS = ("untagged", "label error", "model error", "ambiguous", "image quality")
_EXPECTED = 'a JSON object mapping each film to {"tag", "note", ...}'


def tags_path(run_dir: str | os.PathLike) -> Path:
    """Where the run's tags live: in the run folder, or in the user data dir for a shipped run."""
    return added_file_path(run_dir, TAGS_FILE_NAME, "tags")


def read_tags(run_dir: str | os.PathLike) -> tuple[dict[str, dict], list[str]]:
    """The run's usable tags and the problems found: ({}, []) when none were saved; a file that is not a
    JSON object gives ({}, [its message]); entries that are not objects, or whose tag is not one of TAGS, are
    left out, each with a message."""
    path = tags_path(run_dir)
    if not path.exists():
        return {}, []
    try:
        data = read_json_strict(path, dict, _EXPECTED)
    except ValueError as error:
        return {}, [str(error)]
    tags, problems = {}, []
    for file, entry in data.items():
        if not isinstance(entry, dict):
            problems.append(f"The tag of {file} in {path} is {entry!r}, not an object; it is ignored. Tag the "
                            "film again to replace it.")
        elif entry.get("tag", "untagged") not in TAGS:
            problems.append(f"The tag of {file} in {path} is {entry.get('tag')!r}, not one of {TAGS}; it is "
                            "ignored. Tag the film again to replace it.")
        else:
            tags[file] = entry
    return tags, problems


def load_tags(run_dir: str | os.PathLike) -> dict[str, dict]:
    """The run's usable tags (`read_tags` without the problems)."""
    return read_tags(run_dir)[0]


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # Also releases the lock.


def save_tag(run_dir: str | os.PathLike, file: str, tag: str, note: str = "", **details) -> dict[str, dict]:
    """Set one film's tag and note and write the file under the lock; returns all tags.

    Raises ValueError for a tag not in TAGS, or when the tags file exists but is not a JSON object (it is
    then left as it is, so no tag in it is overwritten). An "untagged" film with no note is removed from the
    file. Entries that are not objects are dropped on the first save.
    """
    if tag not in TAGS:
        raise ValueError(f"Got tag={tag!r}; must be one of {TAGS}.")
    path = tags_path(run_dir)
    with _locked(path):
        if path.exists():
            # Raises (naming the file) rather than overwrite tags this process cannot read.
            read_json_strict(path, dict, _EXPECTED)
        tags = load_tags(run_dir)
        if tag == "untagged" and not note.strip():
            tags.pop(file, None)
        else:
            tags[file] = {**details, "tag": tag, "note": note, "updated": now_iso()}
        write_json_atomic(path, tags)
    if path.parent == Path(run_dir):
        refresh_model_card_quietly(run_dir)
    return tags


def tags_csv(tags: dict[str, dict]) -> bytes:
    """Tags as CSV bytes: file, label, predicted, tag, note, updated."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["file", "label", "predicted", "tag", "note", "updated"])
    for file, entry in sorted(tags.items()):
        if isinstance(entry, dict):
            writer.writerow([file, entry.get("label", ""), entry.get("predicted", ""), entry.get("tag", ""),
                             entry.get("note", ""), entry.get("updated", "")])
    return buffer.getvalue().encode()
