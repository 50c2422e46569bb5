"""Tests for core.imaging.budget: small files that decode huge are refused by bytes before decoding, heavy
films are decoded reduced in bounded memory, heavy decodes run a few at a time, and files that are not
regular (a FIFO) or too large are refused without being read. The hostile files are built here."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from core.imaging import budget, common
from core.imaging.loader import ImageLoadError, load_image, read_film, read_film_and_model_input

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_claiming(width: int, height: int, bit_depth: int, colour_type: int) -> bytes:
    """A tiny PNG whose header claims a film of width x height (colour type 6 = RGBA, 0 = gray)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _chunk(b"IEND", b""))


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def ramp16(height: int, width: int) -> np.ndarray:
    return (np.add.outer(np.arange(height) // 8 % 256, np.arange(width) // 8 % 256) * 128).astype(np.uint16)


def test_a_small_png_claiming_a_huge_rgba_film_is_refused_by_bytes_before_decoding():
    bomb = png_header_claiming(10000, 10000, 8, 6)  # 100 megapixels: inside the pixel limit
    assert len(bomb) < 200
    with pytest.raises(ImageLoadError, match=r"^The image 'bomb\.png' is 10000x10000 pixels of RGBA colour; "
                                             r"decoding it would take about 381 MiB of memory, and Paru "
                                             r"decodes at most 256 MiB per film\. Downsize it"):
        read_film(bomb, name="bomb.png", max_side=1024)


def test_a_float_tiff_over_the_byte_budget_is_refused(monkeypatch):
    monkeypatch.setattr(budget, "MAX_DECODE_BYTES", 1_000_000)
    tiff = encode(Image.fromarray(np.ones((512, 1024), np.float32), "F"), "TIFF")  # 2 MiB of float pixels
    with pytest.raises(ImageLoadError, match="32-bit float gray; decoding it would take about 2.0 MiB"):
        load_image(tiff)
    assert load_image(encode(Image.fromarray(np.ones((256, 512), np.float32), "F"), "TIFF")).shape == (224, 224, 1)


def test_a_webp_is_refused_from_its_header_before_libwebp_allocates_its_canvas(monkeypatch):
    from PIL import WebPImagePlugin

    webp = encode(Image.new("RGB", (600, 400), (90, 90, 90)), "WEBP", lossless=True)
    monkeypatch.setattr(budget, "MAX_DECODE_BYTES", 2_000_000)  # the canvas, the frame and the image: 2.9 MB

    def no_decoder(*args, **kwargs):
        raise AssertionError("the WebP decoder was created for a film over the budget")

    monkeypatch.setattr(WebPImagePlugin._webp, "WebPAnimDecoder", no_decoder)
    with pytest.raises(ImageLoadError, match=r"600x400 pixels of WebP colour; decoding it would take about 2.7 MiB"):
        read_film(webp, name="small.webp")


def test_a_heavy_16bit_film_decodes_reduced_like_the_full_decode(monkeypatch):
    film = ramp16(900, 1200)
    png = encode(Image.fromarray(film), "PNG")
    full = read_film(png, max_side=128)
    monkeypatch.setattr(budget, "HEAVY_DECODE_BYTES", 1000)  # every film is heavy now: reduced at once
    reduced = read_film(png, max_side=128)
    assert reduced.gray.shape == full.gray.shape == (96, 128)
    assert np.abs(reduced.gray.astype(int) - full.gray.astype(int)).mean() < 2.0
    assert reduced.notices == full.notices and reduced.meta == full.meta
    for mode in ("RGBA", "P", "1"):
        source = Image.fromarray((film >> 8).astype(np.uint8)).convert(mode)
        assert read_film(encode(source, "PNG"), max_side=128).gray.shape == (96, 128)


def test_a_heavy_16bit_film_takes_at_most_three_times_its_pixel_bytes(tmp_path):
    side = 6000  # 72 MB of 16-bit pixels, above HEAVY_DECODE_BYTES; the old stretch widened it to float32 twice
    path = tmp_path / "heavy16.png"
    Image.fromarray(ramp16(side, side)).save(path, compress_level=1)
    child = (
        "import resource, sys\n"
        f"sys.path.insert(0, {str(PROJECT_ROOT)!r})\n"
        "from core.imaging.loader import read_film_and_model_input\n"
        f"data = open({str(path)!r}, 'rb').read()\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "film, model_input = read_film_and_model_input(data, 224, max_side=1024)\n"
        "assert film.gray.shape == (1024, 1024) and model_input.shape == (224, 224, 1)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)\n"
    )
    peak = int(subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True,
                              timeout=300).stdout)
    assert peak < 3 * side * side * 2, f"decoding took {peak / 2**20:.0f} MiB above the baseline"


def test_at_most_the_heavy_slots_decode_at_once(monkeypatch):
    monkeypatch.setattr(budget, "HEAVY_DECODE_BYTES", 0)  # every decode counts as heavy
    lock, running, most = threading.Lock(), [0], [0]
    original_load = ImageFile.ImageFile.load

    def slow_load(self):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        try:
            return original_load(self)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(ImageFile.ImageFile, "load", slow_load)
    png = encode(Image.fromarray(ramp16(96, 128)), "PNG")
    threads = [threading.Thread(target=read_film_and_model_input, args=(png, 64)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert 1 <= most[0] <= budget.HEAVY_DECODE_SLOTS


def test_the_banded_stretch_equals_the_whole_film_stretch(monkeypatch):
    values = np.random.default_rng(0).normal(1000, 300, (37, 53)).astype(np.float32)
    values[3, 4], values[5, 6], values[7, 8] = np.nan, np.inf, -np.inf
    whole = common.stretch_to_uint8(values, 400.0, 1600.0)
    monkeypatch.setattr(common, "_STRETCH_BAND_PIXELS", 7 * 53)
    assert np.array_equal(common.stretch_to_uint8(values, 400.0, 1600.0), whole)
    assert whole[3, 4] == whole[5, 6] == whole[7, 8] == 0
    expected = np.clip(np.rint((values[0] - 400) * np.float32(255 / 1200)), 0, 255).astype(np.uint8)
    assert np.array_equal(whole[0], expected)


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "film.png"
    os.mkfifo(fifo)
    outcome = []

    def read():
        try:
            read_film(fifo)
        except ImageLoadError as error:
            outcome.append(str(error))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():  # the old loader blocks in open(); a writer releases it so the test can end
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO blocked instead of being refused")
    assert "is a named pipe (FIFO), not a film file; it was not opened" in outcome[0]


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(budget, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "big.png"
    path.write_bytes(encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96), np.uint8)), "PNG"))
    assert path.stat().st_size > 1000
    with pytest.raises(ImageLoadError, match=r"big\.png' is [\d.]+ MiB; Paru reads films of at most 0\.0 MiB"):
        read_film(path)
