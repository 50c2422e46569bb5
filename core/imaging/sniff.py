"""Which format a file is, from its bytes alone.

The format is sniffed from magic numbers, never taken from the file name or extension, so a PNG named
.jpg is read as the PNG it is and a ZIP named .png is refused as a ZIP. Files that are not films (archives,
documents, web pages, videos, text) are refused here with a message that says what they look like and
what to choose instead.
"""

from __future__ import annotations

from core.imaging.common import ImageLoadError

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


def sniff(data: bytes, subject: str) -> str:
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

    if looks_like_headerless_dicom(head):
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


def looks_like_headerless_dicom(head: bytes) -> bool:
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


def webp_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a WebP file's header (VP8, VP8L or VP8X chunk), or None when it cannot tell.

    Read without decoding, because libwebp allocates the whole canvas as soon as a file is opened.
    """
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None
