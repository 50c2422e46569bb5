"""Tests for core.data.split: stratification, reproducibility, no leakage across subsets, and validation."""

import numpy as np
import pytest

from core.data.split import group_ids, split_summary, stratified_group_split

CLASS_NAMES = ["Normal", "Pneumonia", "Cardiomegaly", "Pneumothorax"]
FRACTIONS = (0.70, 0.15, 0.15)


def thousand_labels():
    """1,000 labels over four unbalanced classes, shuffled."""
    labels = np.repeat(CLASS_NAMES, [400, 300, 200, 100])
    return labels[np.random.default_rng(0).permutation(len(labels))]


def patient_dataset(n_patients=300, seed=0):
    """Labels, patient ids and content hashes for patients with 1-5 films each, all of one class."""
    rng = np.random.default_rng(seed)
    films_per_patient = rng.integers(1, 6, n_patients)
    patient_class = rng.choice(CLASS_NAMES, n_patients)
    patient_ids = np.repeat([f"patient-{index}" for index in range(n_patients)], films_per_patient)
    labels = np.repeat(patient_class, films_per_patient)
    hashes = [f"hash-{index}" for index in range(len(labels))]
    return labels, patient_ids, hashes


# --------------------------------------------------------------------------------------------------
# group_ids
# --------------------------------------------------------------------------------------------------


def test_group_ids_merges_patients_and_duplicates_transitively():
    # Films 0 and 2 share a patient; film 2 and film 4 are the same bytes; film 1 and 3 share bytes.
    groups = group_ids(
        6,
        patient_ids=["p1", None, "p1", "", float("nan"), "p2"],
        content_hashes=["a", "b", "c", "b", "c", "d"],
    )
    assert groups.tolist() == [0, 1, 0, 1, 0, 2]
    assert groups.dtype == np.int64


def test_group_ids_missing_patient_ids_do_not_merge():
    groups = group_ids(3, patient_ids=[None, "", float("nan")])
    assert groups.tolist() == [0, 1, 2]
    assert group_ids(3).tolist() == [0, 1, 2]


def test_group_ids_patient_and_hash_namespaces_are_separate():
    assert group_ids(2, patient_ids=["abc", None], content_hashes=[None, "abc"]).tolist() == [0, 1]


def test_group_ids_length_mismatch_raises():
    with pytest.raises(ValueError, match=r"Got 2 patient_ids for n=3 items; expected one entry per item"):
        group_ids(3, patient_ids=["p1", "p2"])


# --------------------------------------------------------------------------------------------------
# Stratification and reproducibility
# --------------------------------------------------------------------------------------------------


def test_per_class_proportions_are_within_one_group_of_target():
    labels = thousand_labels()
    subsets = stratified_group_split(labels, fractions=FRACTIONS, seed=0)
    assert set(subsets.tolist()) == {"train", "val", "test"}
    summary = split_summary(labels, subsets, CLASS_NAMES)
    for name in CLASS_NAMES:
        class_total = int(np.sum(labels == name))
        for subset, fraction in zip(("train", "val", "test"), FRACTIONS):
            assert abs(summary[subset][name] - fraction * class_total) <= 1, (name, subset)


def test_per_class_proportions_with_patient_groups():
    labels, patient_ids, hashes = patient_dataset()
    groups = group_ids(len(labels), patient_ids=patient_ids, content_hashes=hashes)
    subsets = stratified_group_split(labels, groups, fractions=FRACTIONS, seed=0)
    summary = split_summary(labels, subsets, CLASS_NAMES)
    largest_group = np.bincount(groups).max()
    for name in CLASS_NAMES:
        class_total = int(np.sum(labels == name))
        for subset, fraction in zip(("train", "val", "test"), FRACTIONS):
            assert abs(summary[subset][name] - fraction * class_total) <= largest_group, (name, subset)


def test_same_seed_same_split_and_different_seed_different_split():
    labels = thousand_labels()
    first = stratified_group_split(labels, seed=0)
    second = stratified_group_split(labels.copy(), seed=0)
    other = stratified_group_split(labels, seed=1)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)
    # The class counts per subset do not depend on the seed, only which items go where.
    assert split_summary(labels, first, CLASS_NAMES) == split_summary(labels, other, CLASS_NAMES)


def test_returns_strings_per_item():
    labels = thousand_labels()
    subsets = stratified_group_split(labels)
    assert subsets.shape == labels.shape
    assert subsets.dtype.kind == "U"


def test_integer_labels_are_accepted():
    labels = np.repeat([0, 1], [50, 30])
    summary = split_summary(labels, stratified_group_split(labels), ["a", "b"])
    assert summary["train"] == {"a": 35, "b": 21}


# --------------------------------------------------------------------------------------------------
# Leakage
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_patient_is_in_two_subsets(seed):
    labels, patient_ids, hashes = patient_dataset(seed=seed)
    groups = group_ids(len(labels), patient_ids=patient_ids, content_hashes=hashes)
    subsets = stratified_group_split(labels, groups, seed=seed)
    for patient in np.unique(patient_ids):
        assert len(set(subsets[patient_ids == patient].tolist())) == 1, patient
    for name in CLASS_NAMES:
        assert set(subsets[labels == name].tolist()) == {"train", "val", "test"}


def test_duplicates_never_cross_subsets():
    rng = np.random.default_rng(3)
    n = 600
    labels = rng.choice(CLASS_NAMES, n)
    # Every fourth film is a byte-identical copy of the film before it (same class, no patient info).
    hashes = [f"hash-{index}" for index in range(n)]
    for index in range(1, n, 4):
        hashes[index] = hashes[index - 1]
        labels[index] = labels[index - 1]
    groups = group_ids(n, patient_ids=[None] * n, content_hashes=hashes)
    subsets = stratified_group_split(labels, groups, seed=0)
    hash_array = np.array(hashes)
    for content_hash in np.unique(hash_array):
        assert len(set(subsets[hash_array == content_hash].tolist())) == 1, content_hash


def test_group_with_mixed_labels_goes_by_majority_and_stays_together():
    labels = np.array(["a"] * 30 + ["b"] * 30)
    groups = np.arange(60)
    # Group 0 holds two "a" films and one "b" film; it is assigned as an "a" group, in one subset.
    groups[[1, 2, 30]] = 0
    subsets = stratified_group_split(labels, groups, seed=0)
    assert len(set(subsets[[0, 1, 2, 30]].tolist())) == 1


# --------------------------------------------------------------------------------------------------
# Validation and impossible splits
# --------------------------------------------------------------------------------------------------


def test_impossible_split_names_the_class_and_what_it_needs():
    labels = np.array(["Normal"] * 20 + ["Pneumothorax"] * 3)
    patient_ids = [f"n{index}" for index in range(20)] + ["p1", "p1", "p2"]
    groups = group_ids(len(labels), patient_ids=patient_ids)
    with pytest.raises(
        ValueError,
        match=r"Class 'Pneumothorax' has only 2 patient groups \(3 images\); a 70/15/15 split needs at least 3 "
        r"groups in every class\. Add images of 'Pneumothorax' or remove the class folder\.",
    ):
        stratified_group_split(labels, groups, fractions=FRACTIONS)


def test_impossible_split_without_groups_counts_images():
    labels = np.array(["Normal"] * 20 + ["Pneumothorax"] * 2)
    with pytest.raises(ValueError, match=r"Class 'Pneumothorax' has only 2 images; a 70/15/15 split needs at least 3"):
        stratified_group_split(labels)


def test_two_images_suffice_when_val_is_zero():
    labels = np.array(["Normal"] * 20 + ["Pneumothorax"] * 2)
    subsets = stratified_group_split(labels, fractions=(0.85, 0.0, 0.15))
    assert sorted(subsets[labels == "Pneumothorax"].tolist()) == ["test", "train"]


@pytest.mark.parametrize(
    "fractions, pattern",
    [
        ((0.7, 0.2, 0.2), r"Got fractions=\(0.7, 0.2, 0.2\), which sum to 1.1; they must sum to 1"),
        ((0.8, 0.3, -0.1), r"every fraction must be 0 or more"),
        ((0.8, 0.2), r"with 2 values; expected three \(train, val, test\)"),
        ("abc", r"expected three numbers"),
    ],
)
def test_fractions_are_validated(fractions, pattern):
    with pytest.raises(ValueError, match=pattern):
        stratified_group_split(thousand_labels(), fractions=fractions)


def test_fractions_from_arithmetic_are_accepted():
    val_share = 0.15 / 0.85
    subsets = stratified_group_split(thousand_labels(), fractions=(1 - val_share, val_share, 0.0))
    assert "test" not in set(subsets.tolist())


def test_zero_val_fraction_gives_no_val_items():
    labels = thousand_labels()
    subsets = stratified_group_split(labels, fractions=(0.85, 0.0, 0.15), seed=0)
    assert "val" not in set(subsets.tolist())
    summary = split_summary(labels, subsets, CLASS_NAMES)
    assert summary["val"] == {name: 0 for name in CLASS_NAMES}
    assert summary["train"]["Normal"] == 340
    assert summary["test"]["Normal"] == 60


def test_mismatched_groups_raise():
    with pytest.raises(ValueError, match=r"Got groups with shape \(3,\) for 4 labels"):
        stratified_group_split(["a", "a", "b", "b"], groups=[0, 1, 2])


# --------------------------------------------------------------------------------------------------
# split_summary
# --------------------------------------------------------------------------------------------------


def test_split_summary_counts():
    labels = ["Normal", "Normal", "Pneumonia", "Normal", "Pneumonia", "Cardiomegaly"]
    subsets = ["train", "test", "train", "train", "val", "test"]
    summary = split_summary(labels, subsets, ["Normal", "Pneumonia", "Cardiomegaly"])
    assert summary == {
        "train": {"Normal": 2, "Pneumonia": 1, "Cardiomegaly": 0},
        "val": {"Normal": 0, "Pneumonia": 1, "Cardiomegaly": 0},
        "test": {"Normal": 1, "Pneumonia": 0, "Cardiomegaly": 1},
    }
    assert list(summary["train"]) == ["Normal", "Pneumonia", "Cardiomegaly"]
    assert all(type(count) is int for counts in summary.values() for count in counts.values())


def test_split_summary_rejects_unknown_labels_and_subsets():
    with pytest.raises(ValueError, match=r"Got labels \['Edema'\] that are not in class_names"):
        split_summary(["Normal", "Edema"], ["train", "test"], ["Normal"])
    with pytest.raises(ValueError, match=r"Got subsets \['holdout'\]; expected only \['train', 'val', 'test'\]"):
        split_summary(["Normal"], ["holdout"], ["Normal"])


def test_check_split_feasible_says_why_a_split_is_impossible_without_splitting():
    from core.data.split import check_split_feasible, stratified_group_split

    labels = ["Normal"] * 10 + ["Pneumonia"] * 2
    problem = check_split_feasible(labels)
    assert problem.startswith("Class 'Pneumonia' has only 2 images; a 70/15/15 split needs at least 3 images")
    with pytest.raises(ValueError, match="has only 2 images"):
        stratified_group_split(labels)
    assert check_split_feasible(labels, fractions=(0.85, 0.0, 0.15)) is None
    one_patient = [f"n{i}" for i in range(10)] + ["p", "p"]
    assert "only 1 patient groups (2 images)" in check_split_feasible(labels, groups=one_patient,
                                                                      fractions=(0.85, 0.0, 0.15))
