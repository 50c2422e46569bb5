"""Similar cases: the nearest training films in the run's pooled features, stored with the run."""

import numpy as np

from core.runs.artifacts import SIMILAR_FILE_NAME
from core.serving.similar import load_similar_index, nearest, save_similar_index


def test_the_nearest_training_films_come_back_nearest_first_with_their_labels(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 16)).astype(np.float32)
    files = [f"Normal/{i:03d}.png" if i % 2 else f"Pneumonia/{i:03d}.png" for i in range(30)]
    labels = [name.split("/")[0] for name in files]
    save_similar_index(tmp_path, features, files, labels)
    assert (tmp_path / SIMILAR_FILE_NAME).is_file()
    index = load_similar_index(tmp_path)
    query = features[7] * 3.0 + rng.normal(scale=0.01, size=16)  # The same direction, another length.
    found = nearest(index, query)
    assert len(found) == 3 and found[0]["file"] == files[7] and found[0]["label"] == labels[7]
    assert found[0]["distance"] < 0.01 and [f["distance"] for f in found] == sorted(f["distance"] for f in found)
    assert set(found[0]) == {"file", "label", "distance"}


def test_a_run_without_the_index_or_with_a_damaged_one_has_no_similar_cases(tmp_path):
    assert load_similar_index(tmp_path) is None
    assert nearest(None, np.ones(8)) == []
    (tmp_path / SIMILAR_FILE_NAME).write_bytes(b"not a zip")
    assert load_similar_index(tmp_path) is None
    save_similar_index(tmp_path, np.ones((2, 4)), ["a.png", "b.png"], ["Normal", "Normal"])
    assert nearest(load_similar_index(tmp_path), np.ones(5)) == []  # Features of another model.
