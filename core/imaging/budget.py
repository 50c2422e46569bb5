"""How much memory one decode may take, and how many heavy decodes run at once.

A small file can claim a huge film: a few hundred KiB of PNG, WebP or TIFF decode to hundreds of MiB of
pixels, and every copy made on the way to uint8 multiplies that. `MAX_PIXELS` (in `common`) bounds the
pixels; this module bounds the bytes:

- `decode_cost` is what a decoder holds at its peak for a film of a given size and pixel mode (Pillow keeps
  RGB in 4 bytes a pixel; its WebP decoder holds the canvas, the frame and the image, three copies).
- `check_decode_cost` refuses a film whose cost exceeds `MAX_DECODE_BYTES`, before any pixel is decoded.
- A film that costs more than `HEAVY_DECODE_BYTES` is *heavy*: when a smaller film is asked for it is
  reduced right after decoding (`reduction_factor`), before any conversion copies it, and at most
  `HEAVY_DECODE_SLOTS` heavy decodes run at once in the process (`decode_slot`), so that several sessions
  or decoding threads cannot multiply the peak. Films below the heavy size (every real chest film seen so
  far) decode exactly as before and never wait.
- `MAX_FILE_BYTES` bounds the file itself: a larger file is refused before it is read.

The limits are read from this module at call time, so patching them here changes what every decoder does.
"""

from __future__ import annotations

import contextlib
import threading

from core.imaging.common import ImageLoadError

MAX_DECODE_BYTES = 256 * 2**20
"""A film whose decode would hold more bytes than this is refused before it is decoded."""

HEAVY_DECODE_BYTES = 64 * 2**20
"""Decodes that hold more bytes than this are heavy: reduced at once when a smaller film is asked for,
and limited to HEAVY_DECODE_SLOTS at a time."""

HEAVY_DECODE_SLOTS = 2
"""How many heavy decodes may run at the same time in one process; the others wait their turn."""

MAX_FILE_BYTES = 256 * 2**20
"""Files larger than this are refused without being read (no chest film comes near it)."""

# Bytes Pillow holds per pixel in each mode (RGB, LA and the like are stored in 4 bytes per pixel).
_ONE_BYTE_MODES = {"1", "L", "P"}
# Copies of the canvas a decoder holds at its peak, beyond the image itself.
_DECODER_COPIES = {"WEBP": 3, "HEIF": 2, "AVIF": 2}
# Modes Pillow cannot reduce or composite directly are converted band by band, at this many bytes per band.
_BAND_BYTES = 16 * 2**20

_heavy_slots = threading.BoundedSemaphore(HEAVY_DECODE_SLOTS)


def bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow stores per pixel of `mode` ("L" 1, "I;16" 2, "RGB" 4, ...)."""
    if mode in _ONE_BYTE_MODES:
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def decode_cost(width: int, height: int, mode: str, kind: str) -> int:
    """Bytes a raster decoder holds at its peak for a film of width x height in Pillow `mode`."""
    per_pixel = bytes_per_pixel(mode)
    if mode in ("P", "1"):
        per_pixel += 1  # converted to L or RGB(A) on the way to gray, band by band when heavy
    return width * height * per_pixel * _DECODER_COPIES.get(kind, 1)


def _mib(value: int) -> str:
    return f"{value / 2**20:,.0f} MiB" if value >= 10 * 2**20 else f"{value / 2**20:.1f} MiB"


def check_decode_cost(cost: int, width: int, height: int, what: str, label: str | None) -> None:
    """Refuse (ImageLoadError) a decode that would hold more than MAX_DECODE_BYTES.

    `what` describes the pixels for the message, e.g. "16-bit gray" or "RGBA".
    """
    if cost <= MAX_DECODE_BYTES:
        return
    quoted = f" '{label}'" if label else ""
    raise ImageLoadError(
        f"The image{quoted} is {width}x{height} pixels of {what}; decoding it would take about {_mib(cost)} of "
        f"memory, and Paru decodes at most {_mib(MAX_DECODE_BYTES)} per film. Downsize it (a chest film needs "
        "no more than about 4000 pixels a side) or save it as 8-bit grayscale PNG."
    )


def check_file_size(size: int, shown: str) -> None:
    """Refuse (ImageLoadError) a file larger than MAX_FILE_BYTES, before reading it."""
    if size > MAX_FILE_BYTES:
        raise ImageLoadError(
            f"The file '{shown}' is {_mib(size)}; Paru reads films of at most {_mib(MAX_FILE_BYTES)}. "
            "A chest film is far smaller: check that this is a film, or export it again at a usual size."
        )


def is_heavy(cost: int) -> bool:
    return cost > HEAVY_DECODE_BYTES


@contextlib.contextmanager
def decode_slot(cost: int):
    """Hold one of the HEAVY_DECODE_SLOTS while a heavy decode runs; light decodes never wait."""
    if not is_heavy(cost):
        yield
        return
    with _heavy_slots:
        yield


def reduction_factor(size: tuple[int, int], reduce_to: int | None, cost: int) -> int:
    """The integer box-reduction to apply to a heavy film right after decoding (1: none).

    Only heavy films are reduced, and only when a film of at most `reduce_to` pixels a side is wanted; the
    result keeps at least twice that on its long side, so the final bilinear resize looks the same.
    """
    if reduce_to is None or not is_heavy(cost):
        return 1
    return max(1, max(size) // (2 * reduce_to))


def band_rows(width: int, per_pixel: int, factor: int) -> int:
    """Rows of one band (a multiple of `factor`) holding about _BAND_BYTES of pixels."""
    rows = max(1, _BAND_BYTES // max(1, width * per_pixel))
    return max(factor, rows // factor * factor)
