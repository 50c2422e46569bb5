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

The work is split by stage: `sniff` (format from the bytes), `raster` (Pillow), `dicom` (pydicom),
`common` (the Film record, ImageLoadError, the size limits MIN_SIDE / MAX_ASPECT / MAX_PIXELS and the
one step to uint8) and `budget` (the memory one decode may take, MAX_DECODE_BYTES and MAX_FILE_BYTES, and
how many heavy decodes run at once). Paths are read only when they are regular files (`check_file`). This module is the public API; `Film` and `ImageLoadError` are defined in `common`
and belong to it.

Example::

    film = read_film("film.dcm", max_side=1024)   # for display; film.notices, film.meta
    model_input = load_image("film.dcm")          # uint8, shape (224, 224, 1)
"""

from __future__ import annotations

import os
import re
import stat

import numpy as np
from PIL import Image

from core.imaging.budget import check_file_size
from core.imaging.common import Film, ImageLoadError, finish
from core.imaging.dicom import read_dicom
from core.imaging.raster import read_raster
from core.imaging.sniff import sniff
from core.validation import check_int

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "Film",
    "ImageLoadError",
    "load_image",
    "read_film",
    "check_file",
    "check_header",
    "read_file_bytes",
    "read_film_and_model_input",
    "squeeze_channel",
    "to_model_input",
]

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm", ".dicom"}
)
"""File name extensions (lower-case, with the dot) of files Paru reads. Files with no extension are read
too (as DICOM when their bytes look like DICOM). The format itself is always sniffed from the bytes."""



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


def squeeze_channel(image) -> np.ndarray:
    """`image` as an array, with a trailing channel axis of length 1 dropped: (H, W, 1) -> (H, W).

    Every other shape is returned as it is, for the caller's own shape check. This is the one place that
    turns a model-input film (H, W, 1), such as `load_image` output, back into a 2-D grayscale film.
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        return array[:, :, 0]
    return array


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
    image_size = _check_image_size(image_size)
    gray = squeeze_channel(gray)
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(
            f"Got an array of shape {gray.shape} and dtype {gray.dtype}; expected a 2-D uint8 grayscale "
            "image (height, width). Decode files with read_film() or load_image() first."
        )
    if gray.shape[0] == 0 or gray.shape[1] == 0:
        raise ValueError(f"Got an empty image of shape {gray.shape}; expected at least one pixel per side.")
    if gray.shape != (image_size, image_size):
        resized = Image.fromarray(np.ascontiguousarray(gray), mode="L").resize(
            (image_size, image_size), Image.Resampling.BILINEAR
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
    image_size = _check_image_size(image_size)
    film = _read_film(source, name=None, max_side=2 * image_size, gray_only=True)
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
    image_size = _check_image_size(image_size)
    data, label = _source_bytes(source, name)
    try:
        kind = sniff(data, "The file") if data else None
    except ImageLoadError:
        kind = None  # read_film below raises the message that names the file.
    if kind in (None, "JPEG"):
        return read_film(data, name=label, max_side=max_side), load_image(data, image_size)
    # A heavy film (see core.imaging.budget) is reduced at once to what the larger of the two needs.
    reduce_to = None if max_side is None else max(max_side, 2 * image_size)
    full = _read_film(data, name=label, max_side=None, gray_only=False, reduce_to=reduce_to)
    film = Film(gray=finish(full.gray, max_side), notices=full.notices, meta=full.meta)
    return film, to_model_input(finish(full.gray, 2 * image_size), image_size)


def _check_image_size(image_size) -> int:
    return check_int("image_size", image_size, expected="a positive integer such as 224")


def _read_film(source, *, name: str | None, max_side: int | None, gray_only: bool,
               reduce_to: int | None = None) -> Film:
    if max_side is not None:
        max_side = check_int("max_side", max_side, expected="None or a positive integer such as 1024")
    data, label = _source_bytes(source, name)
    subject = "The file" + (f" '{label}'" if label else "")
    if not data:
        raise ImageLoadError(f"{subject} is empty (0 bytes). Upload the film again, or check the file on disk.")
    kind = sniff(data, subject)
    if kind == "DICOM":
        return read_dicom(data, subject, label, max_side)
    return read_raster(data, kind, subject, label, max_side, gray_only, reduce_to)


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
        data = read_file_bytes(path, label)
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


def read_file_bytes(path: str | os.PathLike, label: str | None = None) -> bytes:
    """The bytes of the film file at `path`, after `check_file` (so a FIFO is never opened).

    Raises:
        ImageLoadError: missing, a folder, not a regular file, too large, unreadable; the message names it.
    """
    shown = check_file(path, label)
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise _read_error(error, shown) from None


def check_file(path: str | os.PathLike, label: str | None = None) -> str:
    """Check, without opening it, that `path` is a regular file of at most `budget.MAX_FILE_BYTES`.

    A named pipe (FIFO), a device or a socket would block or never end, so it is refused unopened. `label`
    (default: the path) is only shown in messages. Returns the shown name.

    Raises:
        ImageLoadError: missing, a folder, not a regular file or too large; the message names it.
    """
    shown = _display_name(label if label is not None else os.fspath(path))
    try:
        status = os.stat(path)
    except OSError as error:
        raise _read_error(error, shown) from None
    if stat.S_ISDIR(status.st_mode):
        raise _read_error(IsADirectoryError(), shown)
    if not stat.S_ISREG(status.st_mode):
        raise ImageLoadError(
            f"'{shown}' is {_special_file_kind(status.st_mode)}, not a film file; it was not opened. "
            "Choose an image file."
        )
    check_file_size(status.st_size, shown)
    return shown


def check_header(head: bytes, label: str | None = None) -> str:
    """The format of a file from its first bytes (4096 are enough), or ImageLoadError when it is no film.

    For checking a folder without decoding: the same sniff as `read_film`, on the header alone.
    """
    subject = "The file" + (f" '{_display_name(label)}'" if label else "")
    return sniff(head, subject)


def _read_error(error: OSError, shown: str) -> ImageLoadError:
    """The message for a file that could not be examined or read."""
    if isinstance(error, FileNotFoundError):
        return ImageLoadError(f"There is no file at '{shown}'. Check the path and the file name.")
    if isinstance(error, IsADirectoryError):
        return ImageLoadError(f"'{shown}' is a folder, not a film. Choose an image file inside it.")
    if isinstance(error, PermissionError):
        return ImageLoadError(f"The file '{shown}' cannot be read (permission denied). Check its permissions.")
    return ImageLoadError(
        f"The file '{shown}' could not be read ({error.strerror or error}). Check the disk and the path."
    )


def _special_file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _display_name(label: str) -> str:
    """The label safe to show in one line: control characters removed, long names shortened."""
    text = re.sub(r"[\x00-\x1f\x7f]", "", str(label))
    return text if len(text) <= 160 else text[:80] + "…" + text[-79:]

