"""What every decoder of `core.imaging` shares: the Film record, ImageLoadError, the size checks and the
one step from deep pixel values to uint8.

Internal to the package: callers use `core.imaging.loader`, which re-exports `Film` and `ImageLoadError`
as its public API. The size limits are read from here at call time, so patching them here changes what
every decoder accepts.

Importing this module sets Pillow's own decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`) to
`MAX_PIXELS`, so that Pillow's guard and Paru's agree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

MIN_SIDE = 64
"""Films smaller than this many pixels on either side are refused (thumbnails and icons)."""

MAX_ASPECT = 4.0
"""Films whose long side is more than this many times the short side are refused."""

MAX_PIXELS = 100_000_000
"""Films with more pixels than this (width x height) are refused before they are decoded."""

ROBUST_PERCENTILES = (0.5, 99.5)
"""Films deeper than 8 bits without a DICOM window map these percentiles of their values to 0 and 255."""


# Pillow refuses images above 2 * MAX_IMAGE_PIXELS and warns above MAX_IMAGE_PIXELS. Paru checks the size
# itself before decoding, with a clearer message; aligning the two means Pillow's guard only fires for
# films Paru refuses anyway, and those errors are converted below.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# Sample at most this many pixels for percentiles and colourfulness; the estimate is stable well below it.
_STATISTICS_SAMPLE_PIXELS = 1_000_000
# Films are stretched to uint8 in bands of about this many pixels (a 16 MiB float32 working copy).
_STRETCH_BAND_PIXELS = 4_000_000


class ImageLoadError(ValueError):
    """A file that cannot be used as a film; str(e) is a message a person can act on."""


@dataclass(frozen=True)
class Film:
    """One decoded film.

    Attributes:
        gray: 2-D uint8 grayscale array (height, width), for display and the model; downsized (keeping the
            aspect ratio) so that the longest side is at most `max_side` when `read_film` was given one.
        notices: things the user should know, in the order they happened, e.g.
            "Multi-frame DICOM: used frame 1 of 12", "EXIF orientation applied",
            "16-bit image scaled to 8 bits (...)". Empty when there is nothing to say.
        meta: facts about the source file:
            "format" ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP", "DICOM", ...),
            "mode" (Pillow mode of the file such as "L", "I;16", "RGB"; the photometric interpretation for
            DICOM), "bit_depth" (bits per sample in the file; Bits Stored for DICOM),
            "original_size" ((width, height) in the file, before orientation and downsizing),
            "colorfulness" (Hasler–Süsstrunk metric of the RGB image before gray conversion, 0.0 for gray
            sources; a radiograph saved as colour scores near 0, a photo 30 or more), and for DICOM
            "modality", "photometric" and "view_position" when the file has them.
    """

    gray: np.ndarray
    notices: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)


def _megapixels(pixels: float) -> str:
    megapixels = pixels / 1e6
    return f"{megapixels:,.0f}" if megapixels >= 10 else f"{megapixels:.3g}"


def check_dimensions(width: int, height: int, label: str | None, subject: str) -> None:
    """Refuse films that are too large to decode, too small to read or absurdly elongated."""
    quoted = f" '{label}'" if label else ""
    if width * height > MAX_PIXELS:
        raise ImageLoadError(
            f"The image{quoted} is {width}x{height} pixels ({_megapixels(width * height)} megapixels); Paru "
            f"accepts at most {_megapixels(MAX_PIXELS)} megapixels. Downsize it before uploading."
        )
    if min(width, height) < MIN_SIDE:
        raise ImageLoadError(
            f"{subject} is {width}x{height} pixels; Paru needs films at least {MIN_SIDE} pixels on each side. "
            "Use the original film rather than a thumbnail or an icon."
        )
    aspect = max(width, height) / min(width, height)
    if aspect > MAX_ASPECT:
        raise ImageLoadError(
            f"{subject} is {width}x{height} pixels, an aspect ratio of {aspect:.1f}:1; Paru accepts films up "
            f"to {MAX_ASPECT:g}:1. Crop it to the chest film or use the original image."
        )


def bomb_error(error: Exception, label: str | None) -> ImageLoadError:
    """Convert Pillow's decompression-bomb error or warning into Paru's message."""
    quoted = f" '{label}'" if label else ""
    match = re.search(r"\((\d+) pixels\)", str(error))
    size = f" has {_megapixels(int(match.group(1)))} megapixels;" if match else " is too large;"
    return ImageLoadError(
        f"The image{quoted}{size} Paru accepts at most {_megapixels(MAX_PIXELS)} megapixels. "
        "Downsize it before uploading."
    )


def damaged(subject: str, error: BaseException) -> ImageLoadError:
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ImageLoadError(
        f"{subject} could not be decoded: the file looks truncated or damaged ({detail[:200]}). "
        "Export or download it again."
    )


def _fit(image: Image.Image, max_side: int | None) -> Image.Image:
    """Downsize `image` (bilinear, antialiased) so its longest side is at most `max_side`."""
    if max_side is None or max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def finish(gray: np.ndarray | Image.Image, max_side: int | None) -> np.ndarray:
    """The final 2-D uint8 array, downsized to `max_side`."""
    image = gray if isinstance(gray, Image.Image) else Image.fromarray(np.ascontiguousarray(gray), mode="L")
    return np.array(_fit(image, max_side), dtype=np.uint8)


def statistics_sample(values: np.ndarray) -> np.ndarray:
    """A regular subsample of a 2-D or 3-D array with at most about _STATISTICS_SAMPLE_PIXELS pixels."""
    step = max(1, math.ceil(math.sqrt(values.shape[0] * values.shape[1] / _STATISTICS_SAMPLE_PIXELS)))
    return values[::step, ::step]


def stretch_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map `low` to 0 and `high` to 255 linearly, clipping outside. `high` may be below `low` (inverts).

    Non-finite values become 0. The film is done in bands of rows, so the float32 working copy is one band,
    never a second copy of the whole film.
    """
    result = np.empty(values.shape, dtype=np.uint8)
    scale = np.float32(255.0 / (high - low))
    step = max(1, _STRETCH_BAND_PIXELS // max(1, int(np.prod(values.shape[1:]))))
    for start in range(0, values.shape[0], step):
        band = values[start:start + step].astype(np.float32)
        not_finite = ~np.isfinite(band) if np.issubdtype(values.dtype, np.floating) else None
        band -= np.float32(low)
        band *= scale
        np.clip(band, 0, 255, out=band)
        np.rint(band, out=band)
        if not_finite is not None:
            band[not_finite] = 0
        result[start:start + step] = band
    return result


def robust_to_uint8(values: np.ndarray, what: str) -> tuple[np.ndarray, list[str]]:
    """Scale a >8-bit 2-D array to uint8 by its 0.5th..99.5th percentiles (see ROBUST_PERCENTILES).

    Returns (uint8 array, notices): the notice that says the contrast was stretched, naming the source as
    `what` (e.g. "16-bit image"), and one more when the image is blank. Non-finite values become 0. When
    the percentiles coincide (an image that is almost one value) the full min..max is used; a constant
    image becomes all zeros.
    """
    low, high = ROBUST_PERCENTILES
    notices = [f"{what} scaled to 8 bits (contrast stretched between the {low:g}th and {high:g}th percentiles)"]
    blank = notices + ["The image is blank: every pixel has the same value"]
    sample = statistics_sample(values)
    if np.issubdtype(sample.dtype, np.floating):
        sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return np.zeros(values.shape, dtype=np.uint8), blank
    low, high = (float(v) for v in np.percentile(sample, ROBUST_PERCENTILES))
    if high <= low:
        low, high = float(sample.min()), float(sample.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8), blank
    return stretch_to_uint8(values, low, high), notices
