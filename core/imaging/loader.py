"""The one image loader shared by training, evaluation and prediction.

Every film that Paru sees goes through `read_film`: dataset scans, training decode, evaluation and the
upload on the prediction page. It turns a file (a path, or the bytes of an upload) into a 2-D uint8
grayscale array plus notices a person should read and metadata, or raises `ImageLoadError` with a message
that says what is wrong with the file and what to do about it.

- The format is sniffed from the bytes (magic numbers), never taken from the file name or extension.
- Raster files (PNG, JPEG, BMP, TIFF, still GIF, WebP) are read with Pillow; DICOM with pydicom.
- Films deeper than 8 bits (16-bit PNG/TIFF, DICOM without a window) keep their precision until one final
  step to uint8, which stretches the 0.5th..99.5th percentiles of the film to 0..255 (see
  `ROBUST_PERCENTILES`). Plain 8-bit films are used as they are, without any float conversion.
- DICOM films with a VOI LUT or a window (Window Center/Width) are scaled by that window instead, after the
  Modality LUT (Rescale Slope/Intercept); MONOCHROME1 films are inverted so that bone is bright.

The model input is made by `to_model_input` (a plain bilinear resize to a square, as the paper does) and
`load_image` chains the two. Training, evaluation and prediction must all get model input from
`load_image`, so that the model sees films prepared exactly as in training.

Importing this module sets Pillow's own decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`) to
`MAX_PIXELS`, so that Pillow's guard and Paru's agree.

Example::

    film = read_film("film.dcm", max_side=1024)   # for display; film.notices, film.meta
    model_input = load_image("film.dcm")          # uint8, shape (224, 224, 1)
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm", ".dicom"}
)
"""File name extensions (lower-case, with the dot) of files Paru reads. Files with no extension are read
too (as DICOM when their bytes look like DICOM). The format itself is always sniffed from the bytes."""

MIN_SIDE = 64
"""Films smaller than this many pixels on either side are refused (thumbnails and icons)."""

MAX_ASPECT = 4.0
"""Films whose long side is more than this many times the short side are refused."""

MAX_PIXELS = 100_000_000
"""Films with more pixels than this (width x height) are refused before they are decoded."""

ROBUST_PERCENTILES = (0.5, 99.5)
"""Films deeper than 8 bits without a DICOM window map these percentiles of their values to 0 and 255."""

COLORFUL_NOTICE_THRESHOLD = 15.0
"""A colour image whose Hasler–Süsstrunk colourfulness reaches this gets a notice (a radiograph scores ~0)."""

# Pillow refuses images above 2 * MAX_IMAGE_PIXELS and warns above MAX_IMAGE_PIXELS. Paru checks the size
# itself before decoding, with a clearer message; aligning the two means Pillow's guard only fires for
# films Paru refuses anyway, and those errors are converted below.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

# Sample at most this many pixels for percentiles and colourfulness; the estimate is stable well below it.
_STATISTICS_SAMPLE_PIXELS = 1_000_000

_DICOM_TRANSFER_SYNTAX_HINTS = {
    # JPEG baseline and extended (8- and 12-bit lossy).
    "1.2.840.10008.1.2.4.50": ("JPEG", "pylibjpeg-libjpeg: pip install pylibjpeg pylibjpeg-libjpeg"),
    "1.2.840.10008.1.2.4.51": ("JPEG", "pylibjpeg-libjpeg: pip install pylibjpeg pylibjpeg-libjpeg"),
    # JPEG lossless.
    "1.2.840.10008.1.2.4.57": ("JPEG Lossless", "pylibjpeg-libjpeg: pip install pylibjpeg pylibjpeg-libjpeg"),
    "1.2.840.10008.1.2.4.70": ("JPEG Lossless", "pylibjpeg-libjpeg: pip install pylibjpeg pylibjpeg-libjpeg"),
    # JPEG-LS.
    "1.2.840.10008.1.2.4.80": ("JPEG-LS", "pylibjpeg-libjpeg or pyjpegls: pip install pylibjpeg pylibjpeg-libjpeg"),
    "1.2.840.10008.1.2.4.81": ("JPEG-LS", "pylibjpeg-libjpeg or pyjpegls: pip install pylibjpeg pylibjpeg-libjpeg"),
    # JPEG 2000 and High-Throughput JPEG 2000.
    **{
        uid: (
            "JPEG 2000",
            "pylibjpeg-openjpeg or pillow with openjpeg: pip install pylibjpeg pylibjpeg-openjpeg",
        )
        for uid in (
            "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.92",
            "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
            "1.2.840.10008.1.2.4.203",
        )
    },
}
# RLE Lossless is decoded by pydicom itself, so RLE data that fails to decode is damaged (no hint needed).
_RLE_LOSSLESS = "1.2.840.10008.1.2.5"
# DICOM modalities that hold projection radiographs (or are commonly used for exported ones).
_RADIOGRAPH_MODALITIES = {"CR", "DX", "DR", "RG", "OT", "SC"}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_BIT_DEPTHS = {"1": 1, "L": 8, "P": 8, "LA": 8, "PA": 8, "La": 8, "RGB": 8, "RGBA": 8, "RGBa": 8, "RGBX": 8,
               "CMYK": 8, "YCbCr": 8, "LAB": 8, "HSV": 8, "I": 32, "F": 32}


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


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------

def read_film(
    source: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    max_side: int | None = None,
) -> Film:
    """Decode a film file into 8-bit grayscale.

    Args:
        source: a path (str or PathLike) to read, or the file's bytes (bytes, bytearray, memoryview).
            An object with `getvalue()` or `read()` (such as a Streamlit UploadedFile) is read as bytes too.
        name: the file name to show in messages, e.g. an upload's name. It is only echoed in messages and is
            never opened or used as a path. Defaults to the path, or to the object's `name` attribute.
        max_side: when given, the film is downsized (bilinear, keeping the aspect ratio) so that its
            longest side is at most this many pixels. JPEGs are then decoded at reduced size, which is much
            faster. None keeps the full resolution.

    Returns:
        A `Film` with `gray` (2-D uint8), `notices` and `meta`.

    Raises:
        ImageLoadError: the file cannot be used as a film (empty, damaged, not an image, too small, too
            large, colour DICOM, undecodable compression, ...). str(error) says why and what to do.
        TypeError, ValueError: `source` or `max_side` is not of a kind this function accepts.
    """
    return _read_film(source, name=name, max_side=max_side, gray_only=False)


def to_model_input(gray: np.ndarray, image_size: int = 224) -> np.ndarray:
    """Resize a grayscale film to the model's square input.

    The film is stretched to a square without keeping its aspect ratio, as the paper does (224x224), with
    Pillow's bilinear filter, which antialiases when it shrinks. Pixel values stay uint8 in 0..255; the
    model scales them itself.

    Args:
        gray: 2-D uint8 array (height, width), or (height, width, 1), such as `Film.gray`.
        image_size: side of the square output in pixels (default 224).

    Returns:
        uint8 array of shape (image_size, image_size, 1).

    Raises:
        ValueError: `gray` is not a 2-D uint8 image or `image_size` is not a positive integer.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"Got image_size={image_size!r}; expected a positive integer such as 224.")
    gray = np.asarray(gray)
    if gray.ndim == 3 and gray.shape[2] == 1:
        gray = gray[:, :, 0]
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(
            f"Got an array of shape {gray.shape} and dtype {gray.dtype}; expected a 2-D uint8 grayscale "
            "image (height, width). Decode files with read_film() or load_image() first."
        )
    if gray.shape[0] == 0 or gray.shape[1] == 0:
        raise ValueError(f"Got an empty image of shape {gray.shape}; expected at least one pixel per side.")
    size = int(image_size)
    if gray.shape != (size, size):
        resized = Image.fromarray(np.ascontiguousarray(gray), mode="L").resize(
            (size, size), Image.Resampling.BILINEAR
        )
        gray = np.asarray(resized)
    return np.array(gray, dtype=np.uint8, copy=True)[:, :, np.newaxis]


def load_image(source: str | os.PathLike | bytes, image_size: int = 224) -> np.ndarray:
    """Decode a file straight to model input: `read_film` then `to_model_input`.

    This is the one way to make model input from a file, for training, evaluation and prediction alike.
    The film is first decoded with max_side = 2 * image_size (JPEGs are decoded at reduced size, which
    makes scanning thousands of files fast), then resized to the square. Notices and metadata are dropped;
    call `read_film` for those.

    Args:
        source: a path or the file's bytes (see `read_film`).
        image_size: side of the square output in pixels (default 224).

    Returns:
        uint8 array of shape (image_size, image_size, 1).

    Raises:
        ImageLoadError: the file cannot be used as a film (see `read_film`).
    """
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"Got image_size={image_size!r}; expected a positive integer such as 224.")
    film = _read_film(source, name=None, max_side=2 * int(image_size), gray_only=True)
    return to_model_input(film.gray, image_size)


def read_film_and_model_input(
    source: str | os.PathLike | bytes,
    image_size: int = 224,
    *,
    name: str | None = None,
    max_side: int | None = None,
) -> tuple[Film, np.ndarray]:
    """`read_film(source, name=name, max_side=max_side)` and `load_image(source, image_size)` in one call.

    Prediction needs both: the model input, and the film to show and to check. Formats that Pillow decodes
    at full size anyway (PNG, BMP, TIFF, GIF, WebP, ...) are decoded once and both results are made from
    that one decode, identical to the two calls; so is DICOM, whose LUTs and window apply at full size
    whatever the size asked for. JPEG (which libjpeg decodes at a reduced size chosen for each call) is
    decoded twice, exactly as the two calls do.

    Returns:
        (film, model_input): the `Film` and the uint8 (image_size, image_size, 1) array.

    Raises:
        ImageLoadError: the file cannot be used as a film (see `read_film`); the message names the file.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"Got image_size={image_size!r}; expected a positive integer such as 224.")
    data, label = _source_bytes(source, name)
    try:
        kind = _sniff(data, "The file") if data else None
    except ImageLoadError:
        kind = None  # read_film below raises the message that names the file.
    if kind in (None, "JPEG"):
        return read_film(data, name=label, max_side=max_side), load_image(data, image_size)
    full = _read_film(data, name=label, max_side=None, gray_only=False)
    film = Film(gray=_finish(full.gray, max_side), notices=full.notices, meta=full.meta)
    return film, to_model_input(_finish(full.gray, 2 * int(image_size)), image_size)


# --------------------------------------------------------------------------------------------------
# Source, sniffing and checks shared by all formats
# --------------------------------------------------------------------------------------------------

def _read_film(source, *, name: str | None, max_side: int | None, gray_only: bool) -> Film:
    if max_side is not None and (
        isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 1
    ):
        raise ValueError(f"Got max_side={max_side!r}; expected None or a positive integer such as 1024.")
    data, label = _source_bytes(source, name)
    subject = "The file" + (f" '{label}'" if label else "")
    if not data:
        raise ImageLoadError(f"{subject} is empty (0 bytes). Upload the film again, or check the file on disk.")
    kind = _sniff(data, subject)
    if kind == "DICOM":
        film = _read_dicom(data, subject, label, max_side)
    else:
        film = _read_raster(data, kind, subject, label, max_side, gray_only)
    return film


def _source_bytes(source, name: str | None) -> tuple[bytes, str | None]:
    """The bytes of `source` and the label to show in messages. `name` is only ever used as a label."""
    label = name
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        label = name if name is not None else path
        shown = _display_name(label)
        try:
            with open(path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            raise ImageLoadError(f"There is no file at '{shown}'. Check the path and the file name.") from None
        except IsADirectoryError:
            raise ImageLoadError(f"'{shown}' is a folder, not a film. Choose an image file inside it.") from None
        except PermissionError:
            raise ImageLoadError(
                f"The file '{shown}' cannot be read (permission denied). Check its permissions."
            ) from None
        except OSError as error:
            raise ImageLoadError(
                f"The file '{shown}' could not be read ({error.strerror or error}). Check the disk and the path."
            ) from None
    elif hasattr(source, "getvalue") or hasattr(source, "read"):
        data = source.getvalue() if hasattr(source, "getvalue") else source.read()
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"Got a file object that returned {type(data).__name__}; expected bytes. Open the file in "
                "binary mode ('rb')."
            )
        data = bytes(data)
        if label is None and isinstance(getattr(source, "name", None), str):
            label = source.name
    else:
        raise TypeError(
            f"Got source of type {type(source).__name__}; expected a path (str or os.PathLike) or the "
            "file's bytes."
        )
    return data, (_display_name(label) if label is not None else None)


def _display_name(label: str) -> str:
    """The label safe to show in one line: control characters removed, long names shortened."""
    text = re.sub(r"[\x00-\x1f\x7f]", "", str(label))
    return text if len(text) <= 160 else text[:80] + "…" + text[-79:]


def _sniff(data: bytes, subject: str) -> str:
    """The format of `data` from its magic numbers; raises ImageLoadError for files that are not films."""
    head = data[:4096]
    if data[128:132] == b"DICM":
        return "DICOM"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    # A BMP starts with "BM" and its info-header size is one of a few known values; checking both keeps a
    # text file that happens to start with "BM" from being taken for a damaged bitmap.
    if head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in (
        12, 16, 40, 52, 56, 64, 108, 124
    ):
        return "BMP"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return "HEIF"
        if brand in _AVIF_BRANDS:
            return "AVIF"
        raise ImageLoadError(
            f"{subject} is not an image: it looks like a video (MP4/QuickTime). Export a still film as PNG "
            "or DICOM."
        )

    not_an_image = [
        (b"PK\x03\x04", "a ZIP archive", "Unzip it and choose the films inside."),
        (b"PK\x05\x06", "a ZIP archive (an empty one)", "Choose the film itself."),
        (b"\x1f\x8b", "a gzip archive", "Decompress it and choose the films inside."),
        (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "Extract it and choose the films inside."),
        (b"Rar!\x1a\x07", "a RAR archive", "Extract it and choose the films inside."),
        (b"\x93NUMPY", "a NumPy array file", "Save the film as PNG instead."),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JPEG 2000 image, which Paru does not read",
         "Export the film as PNG or DICOM."),
        (b"\xffO\xffQ", "a JPEG 2000 codestream, which Paru does not read", "Export the film as PNG or DICOM."),
    ]
    for magic, what, advice in not_an_image:
        if head.startswith(magic):
            raise ImageLoadError(f"{subject} is not an image: it looks like {what}. {advice}")
    if head.startswith(b"%PDF"):
        raise ImageLoadError(
            f"{subject} is not an image: it is a PDF document. Export the film from it as PNG, or use the "
            "original DICOM file."
        )
    if len(data) > 257 + 5 and data[257:262] == b"ustar":
        raise ImageLoadError(
            f"{subject} is not an image: it looks like a TAR archive. Extract it and choose the films inside."
        )

    if _looks_like_headerless_dicom(head):
        return "DICOM"

    text = _as_text(head)
    if text is not None:
        lowered = text.lstrip().lower()
        if "<svg" in lowered[:2048]:
            raise ImageLoadError(
                f"{subject} is an SVG file. SVG is a vector drawing, not a radiograph; export the film as PNG "
                "or DICOM."
            )
        if lowered.startswith(("<!doctype html", "<html", "<head", "<body")):
            raise ImageLoadError(
                f"{subject} is not an image: it looks like a web page (HTML), which is what some browsers save "
                "when a download fails. Download the film itself again."
            )
        raise ImageLoadError(
            f"{subject} is not an image: it looks like a text file. Choose the film itself (PNG, JPEG or DICOM)."
        )
    raise ImageLoadError(
        f"{subject} is not an image Paru can read: its first bytes match none of PNG, JPEG, BMP, TIFF, GIF, "
        "WebP or DICOM. Export the film in one of those formats."
    )


def _looks_like_headerless_dicom(head: bytes) -> bool:
    """True for a DICOM data set without the 128-byte preamble and 'DICM' (read with force=True).

    Such files start directly with a data element of the file meta group (0002) or the identifying group
    (0008), in little- or big-endian order.
    """
    if len(head) < 8:
        return False
    group_little = int.from_bytes(head[0:2], "little")
    group_big = int.from_bytes(head[0:2], "big")
    return group_little in (0x0002, 0x0008) or group_big == 0x0008


def _as_text(head: bytes) -> str | None:
    """The start of the file as text when it is mostly printable text, else None."""
    if b"\x00" in head[:1024]:
        return None
    sample = head[:1024]
    if sample.startswith(b"\xef\xbb\xbf"):
        sample = sample[3:]
    printable = sum(1 for byte in sample if 32 <= byte < 127 or byte in (9, 10, 13) or byte >= 128)
    if not sample or printable / len(sample) < 0.95:
        return None
    return sample.decode("utf-8", errors="replace")


def _megapixels(pixels: float) -> str:
    megapixels = pixels / 1e6
    return f"{megapixels:,.0f}" if megapixels >= 10 else f"{megapixels:.3g}"


def _check_dimensions(width: int, height: int, label: str | None, subject: str) -> None:
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


def _bomb_error(error: Exception, label: str | None) -> ImageLoadError:
    """Convert Pillow's decompression-bomb error or warning into Paru's message."""
    quoted = f" '{label}'" if label else ""
    match = re.search(r"\((\d+) pixels\)", str(error))
    size = f" has {_megapixels(int(match.group(1)))} megapixels;" if match else " is too large;"
    return ImageLoadError(
        f"The image{quoted}{size} Paru accepts at most {_megapixels(MAX_PIXELS)} megapixels. "
        "Downsize it before uploading."
    )


def _damaged(subject: str, error: BaseException) -> ImageLoadError:
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


def _finish(gray: np.ndarray | Image.Image, max_side: int | None) -> np.ndarray:
    """The final 2-D uint8 array, downsized to `max_side`."""
    image = gray if isinstance(gray, Image.Image) else Image.fromarray(np.ascontiguousarray(gray), mode="L")
    return np.array(_fit(image, max_side), dtype=np.uint8)


def _statistics_sample(values: np.ndarray) -> np.ndarray:
    """A regular subsample of a 2-D or 3-D array with at most about _STATISTICS_SAMPLE_PIXELS pixels."""
    step = max(1, math.ceil(math.sqrt(values.shape[0] * values.shape[1] / _STATISTICS_SAMPLE_PIXELS)))
    return values[::step, ::step]


def _stretch_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map `low` to 0 and `high` to 255 linearly, clipping outside. `high` may be below `low` (inverts)."""
    scaled = (values.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    np.clip(scaled, 0, 255, out=scaled)
    return np.rint(scaled).astype(np.uint8)


def _robust_to_uint8(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """Scale a >8-bit 2-D array to uint8 by its 0.5th..99.5th percentiles (see ROBUST_PERCENTILES).

    Returns (uint8 array, is_blank). Non-finite values become 0. When the percentiles coincide (an image
    that is almost one value) the full min..max is used; a constant image becomes all zeros.
    """
    sample = _statistics_sample(values)
    if np.issubdtype(sample.dtype, np.floating):
        sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return np.zeros(values.shape, dtype=np.uint8), True
    low, high = (float(v) for v in np.percentile(sample, ROBUST_PERCENTILES))
    if high <= low:
        low, high = float(sample.min()), float(sample.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8), True
    result = _stretch_to_uint8(values, low, high)
    if np.issubdtype(values.dtype, np.floating):
        result[~np.isfinite(values)] = 0
    return result, False


def _colorfulness(rgb: np.ndarray) -> float:
    """Hasler & Süsstrunk (2003) colourfulness of an RGB uint8 image; 0.0 for any gray image."""
    sample = _statistics_sample(rgb).astype(np.float32)
    red, green, blue = sample[..., 0], sample[..., 1], sample[..., 2]
    red_green = red - green
    yellow_blue = 0.5 * (red + green) - blue
    spread = math.hypot(float(red_green.std()), float(yellow_blue.std()))
    mean = math.hypot(float(red_green.mean()), float(yellow_blue.mean()))
    return round(spread + 0.3 * mean, 3)


# --------------------------------------------------------------------------------------------------
# Raster files (Pillow)
# --------------------------------------------------------------------------------------------------

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
    else:  # pragma: no cover - _sniff only returns the kinds above.
        raise ImageLoadError(f"{subject} is in a format Paru does not read ({kind}). Export it as PNG.")
    return image_class


def _read_raster(
    data: bytes, kind: str, subject: str, label: str | None, max_side: int | None, gray_only: bool
) -> Film:
    notices: list[str] = []
    image_class = _raster_image_class(kind, subject)
    try:
        image = image_class(io.BytesIO(data)) if image_class else Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _bomb_error(error, label) from None
    except ImageLoadError:
        raise
    except Exception as error:  # Pillow reports bad headers as SyntaxError, OSError, ValueError, struct.error...
        raise _damaged(subject, error) from None

    width, height = image.size
    source_mode = image.mode
    _check_dimensions(width, height, label, subject)

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

        orientation = _exif_orientation(image)
        image.load()
        if orientation in range(2, 9):
            image = ImageOps.exif_transpose(image)
            notices.append(f"EXIF orientation applied (orientation tag {orientation})")
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _bomb_error(error, label) from None
    except Exception as error:
        raise _damaged(subject, error) from None

    gray, colorfulness, conversion_notices = _raster_to_gray(image)
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
    return Film(gray=_finish(gray, max_side), notices=tuple(notices), meta=meta)


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1..8; 1 means upright). Unreadable EXIF counts as upright."""
    try:
        return int(image.getexif().get(0x0112, 1) or 1)
    except Exception:  # Damaged EXIF blocks are common in phone exports and must not sink the film.
        return 1


def _raster_to_gray(image: Image.Image) -> tuple[Image.Image | np.ndarray, float, list[str]]:
    """Convert a loaded Pillow image to 8-bit gray. Returns (gray, colourfulness, notices)."""
    mode = image.mode
    if mode == "L":
        # The fast path: plain 8-bit gray needs no conversion at all.
        return image, 0.0, []
    if mode == "1":
        return image.convert("L"), 0.0, []
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image)
        depth = 16 if mode.startswith("I;16") else 32
        gray, blank = _robust_to_uint8(values)
        low, high = ROBUST_PERCENTILES
        notices = [f"{depth}-bit image scaled to 8 bits (contrast stretched between the {low:g}th and "
                   f"{high:g}th percentiles)"]
        if blank:
            notices.append("The image is blank: every pixel has the same value")
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


# --------------------------------------------------------------------------------------------------
# DICOM (pydicom)
# --------------------------------------------------------------------------------------------------

def _read_dicom(data: bytes, subject: str, label: str | None, max_side: int | None) -> Film:
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
        from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
    except ImportError:
        raise ImageLoadError(
            f"{subject} is a DICOM file, and reading DICOM needs pydicom: pip install pydicom"
        ) from None

    notices: list[str] = []
    try:
        try:
            dataset = pydicom.dcmread(io.BytesIO(data))
        except InvalidDicomError:
            # DICOM written without the 128-byte preamble and 'DICM' prefix.
            dataset = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as error:
        raise _damaged(subject, error) from None

    if not any(keyword in dataset for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageLoadError(
            f"{subject} is a DICOM file without an image (it has no Pixel Data element); it may be a report or "
            "a presentation state. Choose the image file of the study."
        )
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
    except Exception:
        raise ImageLoadError(
            f"{subject} could not be decoded: the file looks truncated or damaged (the DICOM header has no "
            "valid Rows and Columns). Export it again from the PACS."
        ) from None
    _check_dimensions(columns, rows, label, subject)

    photometric = str(dataset.get("PhotometricInterpretation", "") or "").strip().upper()
    samples_per_pixel = int(dataset.get("SamplesPerPixel", 1) or 1)
    if samples_per_pixel != 1 or (photometric and photometric not in ("MONOCHROME1", "MONOCHROME2")):
        raise ImageLoadError(
            f"{subject} is a colour DICOM image (Photometric Interpretation {photometric or 'not given'}, "
            f"{samples_per_pixel} samples per pixel); Paru reads grayscale radiographs stored as MONOCHROME1 "
            "or MONOCHROME2. This is usually a screenshot or secondary capture: export the original film."
        )
    if not photometric:
        dataset.PhotometricInterpretation = photometric = "MONOCHROME2"
        notices.append("The DICOM file gives no Photometric Interpretation; MONOCHROME2 was assumed")

    # Files read with force=True may lack the file meta information that the pixel decoders need.
    file_meta = getattr(dataset, "file_meta", None)
    if file_meta is None or "TransferSyntaxUID" not in file_meta:
        implicit, little = dataset.original_encoding
        dataset.ensure_file_meta()
        dataset.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit or implicit is None
            else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    transfer_syntax = dataset.file_meta.TransferSyntaxUID

    frame_count = int(dataset.get("NumberOfFrames", 1) or 1)
    try:
        if frame_count > 1:
            # Decode only the first frame, not the whole cine loop or tomosynthesis stack.
            dataset.pixel_array_options(index=0)
            notices.append(f"Multi-frame DICOM: used frame 1 of {frame_count}")
        pixels = dataset.pixel_array
    except Exception as error:
        raise _dicom_decode_error(subject, transfer_syntax, error) from None
    if pixels.ndim == 3:
        pixels = pixels[0]
    if pixels.ndim != 2:
        raise ImageLoadError(
            f"{subject} holds pixel data of shape {pixels.shape}; Paru expects one 2-D grayscale film. "
            "Export a single image from the study."
        )

    try:
        values = apply_modality_lut(pixels, dataset)
        voi_range = _voi_output_range(dataset, apply_voi_lut)
        if voi_range is not None:
            values = apply_voi_lut(values, dataset, index=0)
    except Exception as error:
        raise ImageLoadError(
            f"{subject} has a rescale, LUT or window that could not be applied ({error}). Export the film "
            "again, or as PNG."
        ) from None

    bits_stored = int(dataset.get("BitsStored", pixels.dtype.itemsize * 8) or pixels.dtype.itemsize * 8)
    if voi_range is not None and voi_range[0] != voi_range[1]:
        # The window (or VOI LUT) says how to display the film: its output range maps to 0..255.
        gray = _stretch_to_uint8(values, *voi_range)
    elif values.dtype == np.uint8 and bits_stored == 8:
        # Plain 8-bit DICOM without a window is shown as stored, like an 8-bit PNG.
        gray = values
    else:
        gray, blank = _robust_to_uint8(values)
        low, high = ROBUST_PERCENTILES
        notices.append(
            f"{bits_stored}-bit DICOM without a window scaled to 8 bits (contrast stretched between the "
            f"{low:g}th and {high:g}th percentiles)"
        )
        if blank:
            notices.append("The image is blank: every pixel has the same value")
    if photometric == "MONOCHROME1":
        # MONOCHROME1 shows the lowest value as white; invert so that bone is bright like every other film.
        gray = 255 - gray
        notices.append("MONOCHROME1 DICOM inverted so that dense tissue is bright")

    modality = str(dataset.get("Modality", "") or "").strip().upper()
    if modality and modality not in _RADIOGRAPH_MODALITIES:
        notices.append(
            f"The DICOM modality is {modality}; chest radiographs are usually CR or DX. Check that this is a "
            "chest film."
        )
    meta = {
        "format": "DICOM",
        "mode": photometric,
        "bit_depth": bits_stored,
        "original_size": (columns, rows),
        "colorfulness": 0.0,
        "photometric": photometric,
        "transfer_syntax": str(transfer_syntax),
    }
    if modality:
        meta["modality"] = modality
    view_position = str(dataset.get("ViewPosition", "") or "").strip().upper()
    if view_position:
        meta["view_position"] = view_position
    return Film(gray=_finish(np.ascontiguousarray(gray, dtype=np.uint8), max_side), notices=tuple(notices),
                meta=meta)


def _voi_output_range(dataset, apply_voi_lut) -> tuple[float, float] | None:
    """The values that pydicom's VOI LUT or windowing maps the darkest and brightest inputs to.

    None when the file has neither a VOI LUT Sequence nor a Window Center/Width. Probing pydicom's own
    function keeps the range consistent with it (signed data, rescaled data, SIGMOID windows, LUT depth).
    """
    sequence = dataset.get("VOILUTSequence")
    if sequence and sequence[0].get("LUTDescriptor") is not None and sequence[0].get("LUTData") is not None:
        entries, first_mapped, _ = (int(value) for value in sequence[0].LUTDescriptor)
        probe = np.arange(first_mapped, first_mapped + (entries or 2**16), dtype=np.int64)
        table = apply_voi_lut(probe, dataset, index=0)
        return float(table.min()), float(table.max())
    if dataset.get("WindowCenter") is not None and dataset.get("WindowWidth") is not None:
        with np.errstate(over="ignore"):
            ends = apply_voi_lut(np.array([-1e30, 1e30]), dataset, index=0)
        return float(ends[0]), float(ends[1])
    return None


def _dicom_decode_error(subject: str, transfer_syntax, error: Exception) -> ImageLoadError:
    """The message for pixel data pydicom could not decode: name the compression and the package."""
    # Object reprs such as "<_io.BytesIO object at 0x7f...>" mean nothing to a person; drop them.
    detail = re.sub(r"\s*<[^<>]* at 0x[0-9a-f]+>", "", " ".join(str(error).split()))[:200]
    detail = detail or type(error).__name__
    uid = str(transfer_syntax)
    syntax_name = getattr(transfer_syntax, "name", uid) or uid
    if uid in _DICOM_TRANSFER_SYNTAX_HINTS:
        family, package = _DICOM_TRANSFER_SYNTAX_HINTS[uid]
        return ImageLoadError(
            f"{subject} stores its pixel data as {syntax_name} ({uid}), which could not be decoded here "
            f"({detail}). {family} pixel data needs {package}. If that is installed, the pixel data is "
            "probably damaged: export the film again, uncompressed."
        )
    if getattr(transfer_syntax, "is_compressed", False) and uid != _RLE_LOSSLESS:
        return ImageLoadError(
            f"{subject} stores its pixel data as {syntax_name} ({uid}), which Paru cannot decode ({detail}). "
            "Export the film uncompressed (Explicit VR Little Endian) or as PNG."
        )
    return _damaged(subject, error)
