"""labels.csv: the optional file beside the class folders that gives each film's patient id.

With a path column (`PATH_COLUMNS`) and a patient column (`PATIENT_COLUMNS`), the split keeps every
patient's films in one subset. Placeholder ids ("unknown", "0", "NA", ...; see
`core.data.split.PLACEHOLDER_PATIENT_IDS`) mean "not recorded": they are left out here and counted, so the
data report can say how many films had one, instead of one placeholder grouping most films together.
A file that cannot be read as CSV text gets a message that names it and says what to do.
"""

from __future__ import annotations

import csv
from pathlib import Path

from core.data.split import is_placeholder_patient_id

LABELS_FILE_NAME = "labels.csv"
PATH_COLUMNS = ("file", "path", "filename", "image", "image index", "image_index")
"""labels.csv columns (lower-cased, first match wins) that hold the film's path or file name."""
PATIENT_COLUMNS = ("patient_id", "patient id", "patient", "patientid")
"""labels.csv columns (lower-cased, first match wins) that hold the patient id."""


def read_patient_ids(root: Path) -> dict[str, str]:
    """Map relative path (and bare file name) to patient id from root/labels.csv, if it has one.

    Placeholder ids are left out (see `read_patient_ids_and_placeholders` for their counts).
    """
    return read_patient_ids_and_placeholders(root)[0]


def read_patient_ids_and_placeholders(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(patient ids as `read_patient_ids` returns them, {path: placeholder}) from root/labels.csv.

    The second map holds, for each film whose id is a placeholder or empty, the placeholder as written
    ("(empty)" for an empty field), keyed like the first (relative path and bare file name).

    Raises:
        ValueError: labels.csv is not UTF-8 text or is not a CSV table (for example a field of more than
            131,072 characters); the message names the file and what to do.
    """
    labels_csv = Path(root) / LABELS_FILE_NAME
    if not labels_csv.is_file():
        return {}, {}
    patients: dict[str, str] = {}
    placeholders: dict[str, str] = {}
    try:
        with labels_csv.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
            path_column = next((columns[c] for c in PATH_COLUMNS if c in columns), None)
            patient_column = next((columns[c] for c in PATIENT_COLUMNS if c in columns), None)
            if path_column is None or patient_column is None:
                return {}, {}
            for row in reader:
                rel_path, patient = (row.get(path_column) or "").strip(), (row.get(patient_column) or "").strip()
                if not rel_path:
                    continue
                target = placeholders if is_placeholder_patient_id(patient) else patients
                value = patient or "(empty)"
                target[rel_path.replace("\\", "/")] = value
                target.setdefault(Path(rel_path).name, value)
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{labels_csv} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at position {error.start}). "
            "Save it again as UTF-8 CSV (in Excel: Save As, 'CSV UTF-8'), or remove it to split without patient "
            "ids."
        ) from None
    except csv.Error as error:
        raise ValueError(
            f"{labels_csv} could not be read as a CSV table ({error}); a field longer than "
            f"{csv.field_size_limit():,} characters usually means a binary file or an unclosed quote. It should "
            "hold one row per film with a file name column and a patient_id column: fix it, or remove it to split "
            "without patient ids."
        ) from None
    return patients, placeholders
