"""Raster films (PNG, JPEG, BMP, TIFF, still GIF, WebP, optionally HEIF and AVIF), decoded with Pillow.

EXIF orientation is applied, multi-page TIFFs use their first page, JPEGs are decoded at reduced size
inside libjpeg when a smaller film is asked for, transparency is composited on black, and colour images
are converted to gray with their colourfulness measured (a notice flags a colourful one). Films deeper
than 8 bits keep their precision until the one robust step to uint8 (`common.robust_to_uint8`).
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageOps

from core.imaging import budget
from core.imaging.common import (
    Film,
    ImageLoadError,
    bomb_error,
    check_dimensions,
    damaged,
    finish,
    robust_to_uint8,
    statistics_sample,
)
from core.imaging.sniff import webp_size

COLORFUL_NOTICE_THRESHOLD = 15.0
"""A colour image whose Hasler–Süsstrunk colourfulness reaches this gets a notice (a radiograph scores ~0)."""
_BIT_DEPTHS = {"1": 1, "L": 8, "P": 8, "LA": 8, "PA": 8, "La": 8, "RGB": 8, "RGBA": 8, "RGBa": 8, "RGBX": 8,
               "CMYK": 8, "YCbCr": 8, "LAB": 8, "HSV": 8, "I": 32, "F": 32}


def _colorfulness(rgb: np.ndarray) -> float:
    """Hasler & Süsstrunk (2003) colourfulness of an RGB uint8 image; 0.0 for any gray image."""
    sample = statistics_sample(rgb).astype(np.float32)
    red, green, blue = sample[..., 0], sample[..., 1], sample[..., 2]
    red_green = red - green
    yellow_blue = 0.5 * (red + green) - blue
    spread = math.hypot(float(red_green.std()), float(yellow_blue.std()))
    mean = math.hypot(float(red_green.mean()), float(yellow_blue.mean()))
    return round(spread + 0.3 * mean, 3)


def _raster_image_class(kind: str, subject: str):
    """The Pillow image class for `kind`. Using it directly (rather than Image.open) skips Pillow's own
    open-time size guard, so that Paru's guard can report the exact width and height."""
    if kind == "PNG":
        from PIL.PngImagePlugin import PngImageFile as image_class
    elif kind == "JPEG":
        from PIL.JpegImagePlugin import JpegImageFile as image_class
    elif kind == "BMP":
        from PIL.BmpImagePlugin import BmpImageFile as image_class
    elif kind == "TIFF":
        from PIL.TiffImagePlugin import TiffImageFile as image_class
    elif kind == "GIF":
        from PIL.GifImagePlugin import GifImageFile as image_class
    elif kind == "WEBP":
        from PIL.WebPImagePlugin import WebPImageFile as image_class
    elif kind == "HEIF":
        try:
            import pillow_heif
        except ImportError:
            raise ImageLoadError(
                f"{subject} is a HEIC/HEIF photo, which needs the pillow-heif package: pip install pillow-heif. "
                "Or export the film as JPEG or PNG."
            ) from None
        pillow_heif.register_heif_opener()
        image_class = None
    elif kind == "AVIF":
        from PIL import features

        if not features.check("avif"):
            raise ImageLoadError(
                f"{subject} is an AVIF image, which this Pillow cannot decode. Export the film as PNG or JPEG."
            )
        image_class = None
    else:  # pragma: no cover - sniff only returns the kinds above.
        raise ImageLoadError(f"{subject} is in a format Paru does not read ({kind}). Export it as PNG.")
    return image_class


def read_raster(
    data: bytes, kind: str, subject: str, label: str | None, max_side: int | None, gray_only: bool,
    reduce_to: int | None = None,
) -> Film:
    """Decode a raster film. `reduce_to` (default `max_side`): a heavy film is box-reduced right after
    decoding to keep at least twice this on its long side (see `budget.reduction_factor`)."""
    notices: list[str] = []
    reduce_to = max_side if reduce_to is None else reduce_to
    image_class = _raster_image_class(kind, subject)
    if kind == "WEBP":
        # libwebp allocates its canvas when the file is opened, so the cost is checked from the header first.
        size = webp_size(data)
        if size is not None:
            check_dimensions(*size, label, subject)
            budget.check_decode_cost(budget.decode_cost(*size, "RGBA", kind), *size, "WebP colour", label)
    try:
        image = image_class(io.BytesIO(data)) if image_class else Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise bomb_error(error, label) from None
    except ImageLoadError:
        raise
    except Exception as error:  # Pillow reports bad headers as SyntaxError, OSError, ValueError, struct.error...
        raise damaged(subject, error) from None

    width, height = image.size
    source_mode = image.mode
    check_dimensions(width, height, label, subject)

    try:
        if kind in ("GIF", "PNG", "WEBP") and getattr(image, "is_animated", False):
            what = {"GIF": "an animated GIF", "PNG": "an animated PNG", "WEBP": "an animated WebP"}[kind]
            raise ImageLoadError(
                f"{subject} is {what}; Paru reads single still films. Export the frame you want as PNG."
            )
        if kind == "TIFF":
            page_count = getattr(image, "n_frames", 1)
            if page_count > 1:
                notices.append(f"Multi-page TIFF: used page 1 of {page_count}")
                image.seek(0)

        if kind == "JPEG" and max_side is not None:
            # Decode at 1/2, 1/4 or 1/8 scale inside libjpeg (never below max_side on the short side).
            # Gray output skips colour conversion; read_film keeps colour to measure colourfulness.
            image.draft("L" if gray_only or image.mode == "L" else None, (max_side, max_side))

        cost = budget.decode_cost(image.width, image.height, image.mode, kind)
        budget.check_decode_cost(cost, image.width, image.height, _describe_mode(image.mode), label)
        with budget.decode_slot(cost):
            orientation = _exif_orientation(image)
            image.load()
            factor = budget.reduction_factor(image.size, reduce_to, cost)
            if factor > 1:
                image = _reduce(image, factor)
            if orientation in range(2, 9):
                image = ImageOps.exif_transpose(image)
                notices.append(f"EXIF orientation applied (orientation tag {orientation})")
            gray, colorfulness, conversion_notices = _raster_to_gray(image, source_mode)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise bomb_error(error, label) from None
    except Exception as error:
        raise damaged(subject, error) from None

    notices.extend(conversion_notices)
    if colorfulness >= COLORFUL_NOTICE_THRESHOLD:
        notices.append(
            f"The image is in colour (colourfulness {colorfulness:.0f}; a radiograph scores near 0) and was "
            "converted to grayscale. Check that it is a chest film."
        )
    bit_depth = 16 if source_mode.startswith("I;16") else _BIT_DEPTHS.get(source_mode, 8)
    meta = {
        "format": kind,
        "mode": source_mode,
        "bit_depth": bit_depth,
        "original_size": (width, height),
        "colorfulness": colorfulness,
    }
    return Film(gray=finish(gray, max_side), notices=tuple(notices), meta=meta)


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1..8; 1 means upright). Unreadable EXIF counts as upright."""
    try:
        return int(image.getexif().get(0x0112, 1) or 1)
    except Exception:  # Damaged EXIF blocks are common in phone exports and must not sink the film.
        return 1


def _describe_mode(mode: str) -> str:
    if mode.startswith("I;16"):
        return "16-bit gray"
    return {"1": "1-bit", "L": "8-bit gray", "P": "palette colour", "I": "32-bit gray",
            "F": "32-bit float gray"}.get(mode, f"{mode} colour")


def _reduce(image: Image.Image, factor: int) -> Image.Image:
    """Box-reduce a loaded image by an integer `factor` (each output pixel the mean of factor x factor).

    Modes Pillow reduces directly are reduced in one call, which allocates only the small result. 1-bit,
    palette and 16-bit images are converted band by band, and images with alpha reduced band by band
    (Pillow premultiplies them into a full-size copy first), in bands a multiple of `factor` rows high so
    the result equals reducing the whole; never as a second full-size copy.
    """
    if image.mode not in ("1", "P", "LA", "RGBA") and not image.mode.startswith("I;16"):
        return image.reduce(factor)
    target = ("I" if image.mode.startswith("I;16") else "L" if image.mode == "1"
              else image.mode if image.mode in ("LA", "RGBA")
              else "RGBA" if "transparency" in image.info else "RGB")
    width, height = image.size
    result = Image.new(target, (math.ceil(width / factor), math.ceil(height / factor)))
    rows = budget.band_rows(width, budget.bytes_per_pixel(target), factor)
    for top in range(0, height, rows):
        band = image.crop((0, top, width, min(height, top + rows))).convert(target)
        result.paste(band.reduce(factor), (0, top // factor))
    return result


def _raster_to_gray(image: Image.Image, source_mode: str) -> tuple[Image.Image | np.ndarray, float, list[str]]:
    """Convert a loaded Pillow image to 8-bit gray. Returns (gray, colourfulness, notices).

    `source_mode` is the file's mode, which names the bit depth in the notice (a reduced 16-bit film is
    held in mode "I").
    """
    mode = image.mode
    if mode == "L":
        # The fast path: plain 8-bit gray needs no conversion at all.
        return image, 0.0, []
    if mode == "1":
        return image.convert("L"), 0.0, []
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image)
        depth = 16 if source_mode.startswith("I;16") else 32
        gray, notices = robust_to_uint8(values, f"{depth}-bit image")
        return gray, 0.0, notices

    notices: list[str] = []
    if mode == "P":
        mode_with_alpha = "RGBA" if "transparency" in image.info else "RGB"
        image = image.convert(mode_with_alpha)
    elif mode in ("PA", "La", "RGBa"):
        image = image.convert("RGBA")
    elif mode not in ("LA", "RGB", "RGBA"):
        # CMYK, YCbCr, LAB, HSV, RGBX: Pillow converts all of them to RGB.
        image = image.convert("RGB")

    if image.mode in ("LA", "RGBA"):
        alpha = image.getchannel("A")
        base = image.convert("L" if image.mode == "LA" else "RGB")
        if alpha.getextrema()[0] < 255:
            # Transparent pixels become black, the way a viewer on a dark background shows them.
            background = Image.new(base.mode, base.size, 0)
            background.paste(base, mask=alpha)
            base = background
            notices.append("Transparent areas were composited on black")
        image = base
    if image.mode == "L":
        return image, 0.0, notices
    colorfulness = _colorfulness(np.asarray(image))
    return image.convert("L"), colorfulness, notices

