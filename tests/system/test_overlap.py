"""The perceptual-hash threshold's evidence on real films, and the demo run's training films found among
the 256 px samples."""

from __future__ import annotations

import glob
import io

import numpy as np
import pytest
from PIL import Image

from conftest import PROJECT_ROOT, SHARED_DATA

NIH = SHARED_DATA / "nih-cxr4"


def _encoded(image: Image.Image, side: int, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.resize((side, max(1, side * image.height // image.width)), Image.Resampling.LANCZOS).save(
        buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.mark.skipif(not NIH.is_dir(), reason="needs the real films in ../shared/data/nih-cxr4")
def test_threshold_catches_resized_copies_and_never_matches_distinct_real_films():
    """The threshold's evidence: every resized/re-encoded copy matches, no two distinct films do.

    Measured (224 px, threshold 32 of 256 bits): copies 300 px JPEG q85 at most 8 bits from their
    original, 128 px JPEG q50 at most 14; the closest distinct nih-cxr4 pair 62 bits apart, so 0 false
    matches in 26,565 pairs (and 0 in 322,803 pediatric-pneumonia pairs, closest 50 bits).
    """
    from core.data.hashes import NEAR_DUPLICATE_DISTANCE, hamming_distances, perceptual_hashes
    from core.imaging.loader import load_image

    files = sorted(glob.glob(str(NIH / "*" / "*.png")))
    assert len(files) >= 200
    originals = perceptual_hashes(np.stack([load_image(file, 224) for file in files]))
    pairwise = hamming_distances(originals, originals)[np.triu_indices(len(files), 1)]
    false_match_rate = float(np.mean(pairwise <= NEAR_DUPLICATE_DISTANCE))
    print(f"\n{len(pairwise)} distinct pairs: closest {pairwise.min()} bits, false-match rate {false_match_rate}")
    assert false_match_rate == 0.0
    assert pairwise.min() > NEAR_DUPLICATE_DISTANCE + 16  # A wide margin, not a lucky one.
    for side, quality, margin in ((300, 85, 16), (128, 50, 8)):
        copies = perceptual_hashes(np.stack([load_image(_encoded(Image.open(file).convert("L"), side, quality), 224)
                                             for file in files]))
        distances = np.diag(hamming_distances(originals, copies))
        print(f"copies {side} px q{quality}: largest distance {distances.max()}")
        assert distances.max() <= NEAR_DUPLICATE_DISTANCE - margin


@pytest.mark.skipif(not (SHARED_DATA / "samples").is_dir(), reason="needs the real films in ../shared/data/samples")
def test_demo_run_finds_its_training_films_among_the_256_px_samples():
    """samples/ holds 256 px copies of 40 nih-cxr4 films: no byte is identical to the demo run's 512 px
    originals, yet every one the run trained or validated on is found, and none of its test films."""
    from core.data.hashes import perceptual_hashes
    from core.data.scan import decode_in_chunks
    from core.runs.artifacts import read_split_csv
    from core.evaluation.overlap import check_overlap
    from core.runs.registry import load_run

    run = load_run(PROJECT_ROOT / "models" / "demo-nih-cxr4")
    subset_of = {row["path"]: row["subset"] for row in read_split_csv(run.path / "split.csv")}
    root = SHARED_DATA / "samples"
    files, digests, film_hashes = [], [], []
    for paths, images, _, chunk_digests in decode_in_chunks(sorted(root.glob("*/*.png")), 224):
        files += [path.relative_to(root).as_posix() for path in paths]
        digests += chunk_digests
        film_hashes += perceptual_hashes(images)
    overlap = check_overlap(run, files, digests, {}, film_hashes)
    seen = sorted(file for file in files if subset_of.get(file) in ("train", "val"))
    assert overlap["identical_files"] == 0
    assert overlap["near_duplicates"] == len(seen) == 33
    assert sorted(match["file"] for match in overlap["perceptual"]["matches"]) == seen
    assert all(match["file"] == match["seen_file"] for match in overlap["perceptual"]["matches"])
