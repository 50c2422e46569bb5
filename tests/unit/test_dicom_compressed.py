"""Compressed DICOM opens through the one loader path, with the pixels the uncompressed original has.

Each transfer syntax is built from the same synthetic 12-bit (or, for 8-bit JPEG baseline, 8-bit) film
with pydicom's encoders or Debian's dcmtk (`dcmcjpeg`, `dcmcjpls`) and GDCM (`gdcmconv`); a tool that is
not installed skips its cases with the reason. Lossless syntaxes must give back the stored values exactly
and the same 8-bit film from `read_film`; lossy ones stay within the tolerance stated per case (in stored
values and in the 8-bit film).
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from core.imaging.loader import read_film
from pacs_fixture import dicom_film, synthetic_film

pydicom = pytest.importorskip("pydicom")

# (case id, transfer syntax UID, encoder, bits, lossless, tolerance (max stored-value error, mean |error|
# of the 8-bit film)); the encoder is "pydicom", or a command line run on IN and OUT. dcmcjpeg's lossy
# modes are told to keep the stored value range (+sr); by default they shift it.
CASES = [
    ("jpeg-baseline-8bit", "1.2.840.10008.1.2.4.50", ["dcmcjpeg", "+eb", "+q", "95", "+sr", "IN", "OUT"], 8,
     False, (12, 2.0)),
    ("jpeg-extended-12bit", "1.2.840.10008.1.2.4.51", ["dcmcjpeg", "+ee", "+q", "95", "+sr", "IN", "OUT"],
     12, False, (16, 0.5)),
    ("jpeg-lossless-p14", "1.2.840.10008.1.2.4.57", ["dcmcjpeg", "+el", "IN", "OUT"], 12, True, None),
    ("jpeg-lossless-sv1", "1.2.840.10008.1.2.4.70", ["dcmcjpeg", "+e1", "IN", "OUT"], 12, True, None),
    ("jpeg-ls-lossless-dcmtk", "1.2.840.10008.1.2.4.80", ["dcmcjpls", "+el", "IN", "OUT"], 12, True, None),
    ("jpeg-ls-lossless-pydicom", "1.2.840.10008.1.2.4.80", "pydicom", 12, True, None),
    # Near-lossless JPEG-LS guarantees |error| <= NEAR (2 here) on every pixel.
    ("jpeg-ls-near-lossless", "1.2.840.10008.1.2.4.81", ["dcmcjpls", "+en", "+md", "2", "IN", "OUT"], 12, False,
     (2, 0.5)),
    ("jpeg2000-lossless-gdcm", "1.2.840.10008.1.2.4.90", ["gdcmconv", "--j2k", "IN", "OUT"], 12, True, None),
    ("jpeg2000-lossless-pydicom", "1.2.840.10008.1.2.4.90", "pydicom", 12, True, None),
    # Lossy JPEG 2000 encoded at a PSNR of 50 dB.
    ("jpeg2000-lossy-pydicom", "1.2.840.10008.1.2.4.91", "pydicom", 12, False, (80, 1.0)),
    ("rle-gdcm", "1.2.840.10008.1.2.5", ["gdcmconv", "--rle", "IN", "OUT"], 12, True, None),
    ("rle-pydicom", "1.2.840.10008.1.2.5", "pydicom", 12, True, None),
]


def _encode(original, uid: str, encoder, tmp_path: Path) -> bytes:
    if encoder == "pydicom":
        dataset = pydicom.dcmread(io.BytesIO(_bytes(original)))
        options = {"j2k_psnr": [50]} if uid == "1.2.840.10008.1.2.4.91" else {}
        dataset.compress(uid, **options)
        return _bytes(dataset)
    if shutil.which(encoder[0]) is None:
        pytest.skip(f"{encoder[0]} is not installed (Debian: apt-get install dcmtk libgdcm-tools)")
    source, target = tmp_path / "in.dcm", tmp_path / "out.dcm"
    source.write_bytes(_bytes(original))
    command = [str(source) if part == "IN" else str(target) if part == "OUT" else part for part in encoder]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return target.read_bytes()


def _bytes(dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("case, uid, encoder, bits, lossless, tolerance", CASES, ids=[case[0] for case in CASES])
def test_compressed_film_decodes_like_the_original(case, uid, encoder, bits, lossless, tolerance, tmp_path):
    pixels = synthetic_film(256, seed=3, bits=bits)
    original = dicom_film(pixels)
    compressed = _encode(original, uid, encoder, tmp_path)
    assert str(pydicom.dcmread(io.BytesIO(compressed)).file_meta.TransferSyntaxUID) == uid

    decoded = pydicom.dcmread(io.BytesIO(compressed)).pixel_array.astype(np.int64)
    expected_film = read_film(_bytes(original)).gray.astype(np.int64)
    film = read_film(compressed, name=f"{case}.dcm")
    assert film.meta["transfer_syntax"] == uid
    if lossless:
        np.testing.assert_array_equal(decoded, pixels)
        np.testing.assert_array_equal(film.gray, expected_film)
    else:
        max_stored_error, mean_film_error = tolerance
        assert np.abs(decoded - pixels).max() <= max_stored_error
        assert np.abs(film.gray.astype(np.int64) - expected_film).mean() <= mean_film_error


def test_every_compressed_syntax_has_a_decoder():
    """The pinned decoders cover each grayscale syntax the loader names a hint for, and RLE."""
    from pydicom.pixels import get_decoder

    from core.imaging.dicom import _DICOM_TRANSFER_SYNTAX_HINTS, _RLE_LOSSLESS

    # JPEG 2000 Part 2 multi-component (colour) syntaxes have no decoder in pydicom; Paru reads grayscale.
    part2 = {"1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"}
    missing = [uid for uid in (*_DICOM_TRANSFER_SYNTAX_HINTS, _RLE_LOSSLESS)
               if uid not in part2 and not get_decoder(uid).is_available]
    assert not missing, f"no decoder installed for {missing}: pip install -r requirements.txt"
