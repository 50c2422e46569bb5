"""Perceptual hashes: the same film resized or re-encoded, found by its picture rather than its bytes.

SHA-256 finds identical files; these hashes find the copies that SHA-256 misses (the same film saved at
another size or JPEG quality), for the check that test films were not already seen in training.
Hash the decoded films you already have (`DatasetScan.images`, `decode_in_chunks` output); compare hashes
with `hamming_distances` or `nearest_hashes`, and call two films the same when they lie within
`NEAR_DUPLICATE_DISTANCE` bits.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from core.imaging.loader import squeeze_channel

PERCEPTUAL_HASH_METHOD = "phash-dct32-16x16"
"""Name stored with saved hashes, so hashes made by another method are never compared with these."""
PERCEPTUAL_HASH_BITS = 256
"""Length of every hash in bits (64 hex characters)."""
NEAR_DUPLICATE_DISTANCE = 32
"""Largest Hamming distance (of 256 bits) at which two films count as the same film.

Chosen on real films, in the middle of the gap between resized or re-encoded copies of a film (a few
bits from their original) and distinct films (much farther apart than this). tests/system/test_overlap.py
checks both sides of the gap on the shared real sets; the README gives the measured figures."""

_DCT_SIDE, _DCT_KEEP = 32, 16
_DCT_MATRIX: np.ndarray | None = None


def _dct_matrix(side: int) -> np.ndarray:
    """The orthonormal DCT-II matrix (side, side): dct(x) = M @ x."""
    frequency = np.arange(side)[:, np.newaxis]
    position = np.arange(side)[np.newaxis, :]
    matrix = np.cos(np.pi * (2 * position + 1) * frequency / (2 * side)) * np.sqrt(2.0 / side)
    matrix[0] /= np.sqrt(2.0)
    return matrix


def perceptual_hash(image: np.ndarray) -> str:
    """A 256-bit perceptual hash (pHash) of one decoded film, as 64 hex characters.

    The film is shrunk to 32 x 32 (box filter: the mean of each cell, so noise and JPEG blocks average
    out), transformed with a 2-D DCT, and the 16 x 16 lowest frequencies are compared with their median
    (the DC term, overall brightness, is left out and its bit is always 0). A film resized, re-encoded as
    JPEG or slightly brightened keeps nearly the same bits; two different films differ in about half.
    Compare hashes with `hamming_distances`; `NEAR_DUPLICATE_DISTANCE` is the match threshold.

    Args:
        image: decoded film, 2-D (height, width) or (height, width, 1), uint8 0..255, such as one film
            of `DatasetScan.images` or of `decode_in_chunks` (hash the arrays you already decoded).

    Returns:
        64 lowercase hex characters (256 bits).

    Raises:
        ValueError: the image is not a 2-D grayscale array of at least 8 x 8 pixels.

    Example::

        hashes = [perceptual_hash(film) for film in scan.images]
    """
    global _DCT_MATRIX
    array = squeeze_channel(image)
    if array.ndim != 2 or min(array.shape) < 8:
        raise ValueError(
            f"Got an image of shape {array.shape}; expected one decoded grayscale film (height, width) or "
            "(height, width, 1) of at least 8 x 8 pixels, such as core.imaging.loader.load_image output."
        )
    if array.dtype != np.uint8:
        array = np.clip(np.nan_to_num(array.astype(np.float64)), 0, 255).astype(np.uint8)
    small = np.asarray(Image.fromarray(array).resize((_DCT_SIDE, _DCT_SIDE), Image.Resampling.BOX), np.float64)
    if _DCT_MATRIX is None:
        _DCT_MATRIX = _dct_matrix(_DCT_SIDE)
    low = (_DCT_MATRIX @ small @ _DCT_MATRIX.T)[:_DCT_KEEP, :_DCT_KEEP].ravel()
    bits = low > np.median(low[1:])
    bits[0] = False
    return np.packbits(bits).tobytes().hex()


def perceptual_hashes(images: np.ndarray) -> list[str]:
    """`perceptual_hash` of every film of a stack (n, S, S, 1) or (n, S, S)."""
    return [perceptual_hash(image) for image in images]


def _hash_words(hashes: list[str]) -> np.ndarray:
    """Hex hashes as (n, 4) uint64 words; ValueError for a hash that is not 64 hex characters."""
    words = np.zeros((len(hashes), PERCEPTUAL_HASH_BITS // 64), dtype=np.uint64)
    for row, value in enumerate(hashes):
        try:
            raw = bytes.fromhex(value)
        except (TypeError, ValueError):
            raw = b""
        if len(raw) != PERCEPTUAL_HASH_BITS // 8:
            raise ValueError(f"Got perceptual hash {value!r}; expected {PERCEPTUAL_HASH_BITS // 4} hex characters "
                             "from core.data.hashes.perceptual_hash.")
        words[row] = np.frombuffer(raw, dtype=">u8")
    return words


def hamming_distances(hashes_a: list[str], hashes_b: list[str]) -> np.ndarray:
    """All pairwise Hamming distances (int, 0..256) between two lists of perceptual hashes: (len_a, len_b)."""
    words_a, words_b = _hash_words(hashes_a), _hash_words(hashes_b)
    return np.bitwise_count(words_a[:, np.newaxis, :] ^ words_b[np.newaxis, :, :]).sum(axis=-1, dtype=np.int64)


def nearest_hashes(query: list[str], reference: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """For each query hash, the distance to and index of the closest reference hash.

    Computed in slices, so memory stays small for thousands x thousands of films. Returns
    (distances (n_query,) int, indices (n_query,) int); with no reference hashes the distances are
    PERCEPTUAL_HASH_BITS + 1 (farther than any real pair) and the indices -1.
    """
    distances = np.full(len(query), PERCEPTUAL_HASH_BITS + 1, dtype=np.int64)
    indices = np.full(len(query), -1, dtype=np.int64)
    if not query or not reference:
        return distances, indices
    words_reference = _hash_words(reference)
    step = max(1, 250_000 // len(reference))
    for start in range(0, len(query), step):
        words_query = _hash_words(query[start:start + step])
        pairwise = np.bitwise_count(words_query[:, np.newaxis, :] ^ words_reference[np.newaxis, :, :]).sum(
            axis=-1, dtype=np.int64)
        indices[start:start + step] = pairwise.argmin(axis=1)
        distances[start:start + step] = pairwise.min(axis=1)
    return distances, indices
