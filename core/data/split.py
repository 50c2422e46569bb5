"""The reproducible, stratified, patient- and duplicate-aware train/val/test split.

Pure functions: arrays in, arrays or dicts out, with an explicit ``seed``; no TensorFlow, Streamlit or
file I/O. ``core.data.scan`` feeds them the scanned films.

Films are split by *group*, never one by one: a group is every film that shares a patient id or an
identical file content (SHA-256) with another film of the group, so the same patient or the same image
can never sit on both sides of the train/test line.
"""

from __future__ import annotations

import math

import numpy as np

from core.validation import check_int

SUBSETS = ("train", "val", "test")
# Fractions may come from arithmetic such as 1 - 0.85, so their sum is compared with this tolerance.
_FRACTION_SUM_TOLERANCE = 1e-6


PLACEHOLDER_PATIENT_IDS = frozenset({
    "unknown", "unk", "na", "n/a", "nan", "none", "null", "nil", "0", "-", "--", "?", "missing", "anonymous",
    "anon", "not available", "not known", "x",
})
"""Patient ids (lower-cased, stripped) that mean "not recorded". Read as a real id, one of them on most of
the films would put all those films in one group and collapse the split; they count as missing instead."""


def is_placeholder_patient_id(value) -> bool:
    """True for a patient id that carries no information: missing (see `_is_missing`) or a placeholder."""
    return _is_missing(value) or (isinstance(value, str) and value.strip().lower() in PLACEHOLDER_PATIENT_IDS)


def _is_missing(value) -> bool:
    """True for "no information": None, an empty or blank string, NaN, pandas NA/NaT."""
    if value is None:
        return True
    if isinstance(value, (str, bytes)):
        return value.strip() == "" if isinstance(value, str) else value.strip() == b""
    if type(value).__name__ in ("NAType", "NaTType"):
        return True
    if isinstance(value, (float, np.floating)):
        return bool(np.isnan(value))
    return False


def _check_keys(keys, n: int, name: str) -> list:
    if keys is None:
        return [None] * n
    if isinstance(keys, str):
        raise ValueError(f"Got {name}={keys!r}; expected one entry per item (a list of length {n}), not a string.")
    keys = list(keys)
    if len(keys) != n:
        raise ValueError(
            f"Got {len(keys)} {name} for n={n} items; expected one entry per item (use None where unknown)."
        )
    return keys


def group_ids(n: int, patient_ids=None, content_hashes=None) -> np.ndarray:
    """Group items that share a patient id or an identical content hash (union-find).

    Grouping is transitive: if film A and film B share a patient, and film B and film C have identical
    bytes, all three end up in one group.

    Args:
        n: the number of items.
        patient_ids: optional sequence of length n. None, an empty string, NaN or a placeholder such as
            "unknown" or "0" (see `PLACEHOLDER_PATIENT_IDS`) means "no patient information" for that item,
            which then joins a group only through its content hash.
        content_hashes: optional sequence of length n (e.g. SHA-256 hex digests); None or empty means
            unknown.

    Returns:
        ``np.int64`` array of shape (n,): group numbers 0, 1, 2, ... in order of first appearance, so
        the result is identical for identical inputs.

    Example:
        >>> group_ids(4, patient_ids=["p1", None, "p1", None], content_hashes=["a", "b", "c", "b"]).tolist()
        [0, 1, 0, 1]
    """
    n = check_int("n", n, minimum=0, expected="the number of items, an integer of 0 or more")
    patients = _check_keys(patient_ids, n, "patient_ids")
    hashes = _check_keys(content_hashes, n, "content_hashes")

    parent = list(range(n))

    def find(item: int) -> int:
        # Path halving keeps the trees flat, so finding a root stays near constant time.
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def union(first: int, second: int) -> None:
        root_first, root_second = find(first), find(second)
        if root_first != root_second:
            # Keeping the smaller index as the root makes the grouping independent of union order.
            parent[max(root_first, root_second)] = min(root_first, root_second)

    # The two kinds of key live in separate namespaces, so a patient called "abc" never merges with a
    # file whose hash happens to be "abc".
    for keys, missing in ((patients, is_placeholder_patient_id), (hashes, _is_missing)):
        first_item_with_key: dict = {}
        for item, key in enumerate(keys):
            if missing(key):
                continue
            if key in first_item_with_key:
                union(first_item_with_key[key], item)
            else:
                first_item_with_key[key] = item

    numbering: dict[int, int] = {}
    result = np.empty(n, dtype=np.int64)
    for item in range(n):
        root = find(item)
        result[item] = numbering.setdefault(root, len(numbering))
    return result


def _check_fractions(fractions) -> tuple[float, float, float]:
    try:
        values = tuple(float(value) for value in fractions)
    except (TypeError, ValueError):
        raise ValueError(
            f"Got fractions={fractions!r}; expected three numbers (train, val, test) such as (0.70, 0.15, 0.15)."
        ) from None
    if len(values) != 3:
        raise ValueError(
            f"Got fractions={fractions!r} with {len(values)} values; expected three (train, val, test) "
            "such as (0.70, 0.15, 0.15)."
        )
    if not all(math.isfinite(value) and value >= 0 for value in values):
        raise ValueError(f"Got fractions={fractions!r}; every fraction must be 0 or more.")
    if abs(sum(values) - 1.0) > _FRACTION_SUM_TOLERANCE:
        raise ValueError(
            f"Got fractions={fractions!r}, which sum to {sum(values):.6g}; they must sum to 1, "
            "for example (0.70, 0.15, 0.15) or (0.85, 0.0, 0.15)."
        )
    return values


def _format_fractions(fractions) -> str:
    return "/".join(f"{100 * value:g}" for value in fractions)


def stratified_group_split(labels, groups=None, fractions=(0.70, 0.15, 0.15), seed=0) -> np.ndarray:
    """Assign every item to "train", "val" or "test", stratified by class and never splitting a group.

    Each group is assigned as a whole, under its majority label (ties go to the label that sorts
    first). Within each class, the groups are shuffled with ``np.random.default_rng(seed)`` and handed
    out one by one to the subset furthest below its target number of items (``fraction * items of the
    class``), except that every subset with a non-zero fraction is guaranteed at least one group of
    every class. Per-class counts therefore land within about one group of the target.

    Args:
        labels: shape (n,), the class of each item (names or integers).
        groups: optional shape (n,), a group id per item (from ``group_ids``). Default: every item is
            its own group.
        fractions: (train, val, test) shares, each 0 or more, summing to 1. A zero share gives no items
            of that subset, e.g. ``(0.85, 0.0, 0.15)`` has no "val". Default (0.70, 0.15, 0.15).
        seed: seed for ``np.random.default_rng``. The same inputs and seed give the same split.

    Returns:
        ``np.ndarray`` of str, shape (n,), each "train", "val" or "test".

    Raises:
        ValueError: bad fractions, mismatched lengths, no items, or a class with fewer groups than
            subsets to fill; the message names the class and how many groups it needs.
    """
    fraction_values = _check_fractions(fractions)
    label_array = np.asarray(labels)
    if label_array.ndim != 1:
        raise ValueError(f"Got labels with shape {label_array.shape}; expected a 1-D array, one label per item.")
    n = label_array.shape[0]
    if n == 0:
        raise ValueError("Got 0 items to split; add images to the dataset first.")
    if groups is None:
        group_array = np.arange(n)
    else:
        group_array = np.asarray(groups)
        if group_array.shape != (n,):
            raise ValueError(
                f"Got groups with shape {group_array.shape} for {n} labels; expected one group id per item, "
                "e.g. from group_ids()."
            )

    class_values, label_index, group_index, group_label = _group_labels(label_array, group_array)
    n_classes, n_groups = len(class_values), len(group_label)
    group_size = np.bincount(group_index, minlength=n_groups)

    active_subsets = [index for index, value in enumerate(fraction_values) if value > 0]
    problem = _enough_groups_problem(class_values, label_index, group_label, fraction_values, groups is not None)
    if problem:
        raise ValueError(problem)

    rng = np.random.default_rng(seed)
    group_subset = np.empty(n_groups, dtype=np.int64)
    for class_number in range(n_classes):
        class_groups = np.flatnonzero(group_label == class_number)
        class_groups = class_groups[rng.permutation(len(class_groups))]
        class_total = group_size[class_groups].sum()
        targets = np.array([fraction_values[index] * class_total for index in active_subsets])
        filled = np.zeros(len(active_subsets), dtype=np.float64)
        groups_in_subset = np.zeros(len(active_subsets), dtype=np.int64)
        for position, group in enumerate(class_groups):
            deficit = targets - filled
            groups_left = len(class_groups) - position
            empty_subsets = groups_in_subset == 0
            if empty_subsets.sum() >= groups_left:
                # Only as many groups remain as subsets still without one: each must go to an empty subset.
                deficit = np.where(empty_subsets, deficit, -np.inf)
            choice = int(np.argmax(deficit))
            filled[choice] += group_size[group]
            groups_in_subset[choice] += 1
            group_subset[group] = active_subsets[choice]
    return np.asarray(SUBSETS)[group_subset[group_index]]


def check_split_feasible(labels, groups=None, fractions=(0.70, 0.15, 0.15)) -> str | None:
    """Why `stratified_group_split(labels, groups, fractions)` cannot split these items, or None when it can.

    The split needs, in every class, at least one group (patient or identical-file group) for each subset
    with a non-zero fraction; the message names the class, how many groups and images it has, and what to
    do, e.g. "Class 'Pneumonia' has only 2 patient groups (2 images); a 70/15/15 split needs at least 3
    groups in every class. ...". Pure and cheap, so a folder check can call it before training starts.

    Raises:
        ValueError: the arguments themselves are malformed (bad fractions, mismatched lengths).
    """
    fraction_values = _check_fractions(fractions)
    label_array = np.asarray(labels)
    if label_array.ndim != 1 or label_array.shape[0] == 0:
        return "There are no films to split; add images to the dataset first."
    group_array = np.arange(label_array.shape[0]) if groups is None else np.asarray(groups)
    if group_array.shape != label_array.shape:
        raise ValueError(f"Got groups with shape {group_array.shape} for {label_array.shape[0]} labels; expected "
                         "one group id per item, e.g. from group_ids().")
    class_values, label_index, _, group_label = _group_labels(label_array, group_array)
    return _enough_groups_problem(class_values, label_index, group_label, fraction_values, groups is not None)


def _group_labels(label_array: np.ndarray, group_array: np.ndarray):
    """(class values, class index per item, group index per item, majority class index per group)."""
    class_values, label_index = np.unique(label_array, return_inverse=True)
    _, group_index = np.unique(group_array, return_inverse=True)
    n_classes, n_groups = len(class_values), int(group_index.max()) + 1
    # A (groups x classes) table of counts; argmax takes the first maximum, so ties are deterministic.
    label_counts = np.bincount(group_index * n_classes + label_index, minlength=n_groups * n_classes)
    return class_values, label_index, group_index, label_counts.reshape(n_groups, n_classes).argmax(axis=1)


def _enough_groups_problem(class_values, label_index, group_label, fractions, has_groups: bool) -> str | None:
    """The message when a class has fewer groups than non-empty subsets, else None."""
    needed = sum(1 for value in fractions if value > 0)
    groups_per_class = np.bincount(group_label, minlength=len(class_values))
    images_per_class = np.bincount(label_index, minlength=len(class_values))
    short = [index for index in range(len(class_values)) if groups_per_class[index] < needed]
    if not short:
        return None
    worst = min(short, key=lambda index: (groups_per_class[index], images_per_class[index]))
    name = class_values[worst].item() if hasattr(class_values[worst], "item") else class_values[worst]
    unit = "groups" if has_groups else "images"
    counted = (
        f"{groups_per_class[worst]} patient groups ({images_per_class[worst]} images)"
        if has_groups
        else f"{images_per_class[worst]} images"
    )
    others = [class_values[index].item() for index in short if index != worst]
    also = f" (so do {others})" if others else ""
    return (
        f"Class {name!r} has only {counted}; a {_format_fractions(fractions)} split needs at least "
        f"{needed} {unit} in every class{also}. Add images of {name!r} or remove the class folder."
    )


def split_summary(labels, subsets, class_names) -> dict:
    """Count items per subset and class (the paper's Table 1).

    Args:
        labels: shape (n,), class names from `class_names`, or integer indices into it.
        subsets: shape (n,), "train", "val" or "test" per item (from ``stratified_group_split``).
        class_names: the ordered class names; they set the order of the inner dicts.

    Returns:
        ``{subset: {class_name: count}}`` with plain ints, for all of "train", "val" and "test" (a subset
        with no items has all-zero counts).
    """
    names = [str(name) for name in class_names]
    label_array = np.asarray(labels)
    subset_array = np.asarray(subsets).astype(str)
    if label_array.ndim != 1 or subset_array.shape != label_array.shape:
        raise ValueError(
            f"Got labels with shape {label_array.shape} and subsets with shape {subset_array.shape}; "
            "expected two 1-D arrays of the same length, one entry per item."
        )
    if label_array.dtype.kind in "iu":
        if label_array.size and (label_array.min() < 0 or label_array.max() >= len(names)):
            raise ValueError(
                f"Got label indices outside [0, {len(names)}); expected indices into class_names {names}."
            )
        label_array = np.asarray(names, dtype=object)[label_array] if label_array.size else label_array
    label_array = label_array.astype(str)
    unknown_labels = sorted(set(label_array.tolist()) - set(names))
    if unknown_labels:
        raise ValueError(
            f"Got labels {unknown_labels[:5]} that are not in class_names {names}; add them to class_names."
        )
    unknown_subsets = sorted(set(subset_array.tolist()) - set(SUBSETS))
    if unknown_subsets:
        raise ValueError(f"Got subsets {unknown_subsets[:5]}; expected only {list(SUBSETS)}.")
    return {
        subset: {
            name: int(np.count_nonzero((subset_array == subset) & (label_array == name))) for name in names
        }
        for subset in SUBSETS
    }
