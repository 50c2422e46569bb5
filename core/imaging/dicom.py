"""DICOM films, decoded with pydicom (imported lazily: it is only needed when a DICOM file arrives).

The Modality LUT (Rescale Slope/Intercept) is applied first; a VOI LUT or window (Window Center/Width)
then says how to display the film and its output range maps to 0..255. Without a window, films deeper
than 8 bits take the robust percentile stretch (`common.robust_to_uint8`). MONOCHROME1 films are inverted
so that bone is bright; multi-frame files use their first frame; colour DICOM is refused. Pixel data that
cannot be decoded gets a message naming its transfer syntax and the package that decodes it.
"""

from __future__ import annotations

import io
import re

import numpy as np

from core.imaging import budget
from core.imaging.common import (
    Film,
    ImageLoadError,
    check_dimensions,
    damaged,
    finish,
    robust_to_uint8,
    stretch_to_uint8,
)

# The decoder packages of each compression family; requirements.txt pins them, so these syntaxes decode
# out of the box and the hint only matters where someone installed Paru without them.
_DECODERS = {
    "JPEG": "pylibjpeg with pylibjpeg-libjpeg",
    "JPEG Lossless": "pylibjpeg with pylibjpeg-libjpeg",
    "JPEG-LS": "pyjpegls (or pylibjpeg with pylibjpeg-libjpeg)",
    "JPEG 2000": "pylibjpeg with pylibjpeg-openjpeg",
}
_DICOM_TRANSFER_SYNTAX_HINTS = {
    uid: (family, f"{_DECODERS[family]}, pinned in Paru's requirements.txt: pip install -r requirements.txt")
    for family, uids in (
        # JPEG baseline and extended (8- and 12-bit lossy).
        ("JPEG", ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")),
        ("JPEG Lossless", ("1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70")),
        ("JPEG-LS", ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81")),
        # JPEG 2000 and High-Throughput JPEG 2000.
        ("JPEG 2000", ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.92",
                       "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                       "1.2.840.10008.1.2.4.203")),
    )
    for uid in uids
}
# RLE Lossless is decoded by pydicom itself, so RLE data that fails to decode is damaged (no hint needed).
_RLE_LOSSLESS = "1.2.840.10008.1.2.5"
# DICOM modalities that hold projection radiographs (or are commonly used for exported ones).
_RADIOGRAPH_MODALITIES = {"CR", "DX", "DR", "RG", "OT", "SC"}


def read_dicom(data: bytes, subject: str, label: str | None, max_side: int | None) -> Film:
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise ImageLoadError(
            f"{subject} is a DICOM file, and reading DICOM needs pydicom: pip install pydicom"
        ) from None

    try:
        try:
            dataset = pydicom.dcmread(io.BytesIO(data))
        except InvalidDicomError:
            # DICOM written without the 128-byte preamble and 'DICM' prefix.
            dataset = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as error:
        raise damaged(subject, error) from None

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
    check_dimensions(columns, rows, label, subject)
    # The stored pixels plus pydicom's float64 copy for the rescale or window (see core.imaging.budget).
    bits_allocated = int(dataset.get("BitsAllocated", 16) or 16)
    cost = rows * columns * (max(1, bits_allocated // 8) + 8)
    budget.check_decode_cost(cost, columns, rows, f"{bits_allocated}-bit DICOM", label)
    with budget.decode_slot(cost):
        return _decode_dicom(dataset, subject, rows, columns, max_side)


def _decode_dicom(dataset, subject: str, rows: int, columns: int, max_side: int | None) -> Film:
    """The film of a DICOM data set whose size was checked: pixels, LUTs, window, photometric, meta."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    notices: list[str] = []

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
        gray = stretch_to_uint8(values, *voi_range)
    elif values.dtype == np.uint8 and bits_stored == 8:
        # Plain 8-bit DICOM without a window is shown as stored, like an 8-bit PNG.
        gray = values
    else:
        gray, stretch_notices = robust_to_uint8(values, f"{bits_stored}-bit DICOM without a window")
        notices.extend(stretch_notices)
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
    return Film(gray=finish(np.ascontiguousarray(gray, dtype=np.uint8), max_side), notices=tuple(notices),
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
    return damaged(subject, error)
