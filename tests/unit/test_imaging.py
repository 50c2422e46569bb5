"""Tests for core.imaging (loader, sniff, raster, dicom): every accepted format, every refusal, DICOM
display rules and model input.

Files are built in memory with Pillow and pydicom; one test reads a real film from ../shared/data and
skips cleanly where that folder is absent.
"""

import importlib.util
import io
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.imaging import common
from core.imaging.common import MAX_ASPECT, MAX_PIXELS, MIN_SIDE
from core.imaging.loader import (
    SUPPORTED_EXTENSIONS,
    Film,
    ImageLoadError,
    load_image,
    read_film,
    read_film_and_model_input,
    squeeze_channel,
    to_model_input,
)
from core.imaging.raster import COLORFUL_NOTICE_THRESHOLD

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
requires_pydicom = pytest.mark.skipif(importlib.util.find_spec("pydicom") is None, reason="pydicom not installed")


# --------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------

def gradient(height=96, width=128):
    """An 8-bit horizontal ramp, so orientation and scaling are visible in the values."""
    row = np.linspace(0, 255, width).round().astype(np.uint8)
    return np.tile(row, (height, 1))


def encode(image, image_format, **options):
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def png_chunk(chunk_type, payload):
    return (struct.pack(">I", len(payload)) + chunk_type + payload
            + struct.pack(">I", zlib.crc32(chunk_type + payload) & 0xFFFFFFFF))


def png_claiming_size(width, height):
    """A tiny, well-formed PNG whose header claims width x height pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + png_chunk(b"IEND", b""))


def make_dicom(
    pixels=None,
    *,
    photometric="MONOCHROME2",
    bits_stored=12,
    frames=1,
    rescale=None,
    window=None,
    transfer_syntax=None,
    pixel_bytes=None,
    samples_per_pixel=1,
    include_pixel_data=True,
    preamble=True,
    modality="DX",
    view_position="PA",
):
    """The bytes of a small DICOM film. `pixels` is (rows, columns) or (frames, rows, columns)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    if pixels is None:
        pixels = np.zeros((80, 96), dtype=np.uint16)
    pixels = np.asarray(pixels)
    rows, columns = pixels.shape[-2:]
    dataset = Dataset()
    dataset.Modality = modality
    if view_position:
        dataset.ViewPosition = view_position
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = generate_uid()
    dataset.Rows, dataset.Columns = rows, columns
    dataset.SamplesPerPixel = samples_per_pixel
    dataset.PhotometricInterpretation = photometric
    if samples_per_pixel > 1:
        dataset.PlanarConfiguration = 0
    dataset.BitsAllocated = pixels.dtype.itemsize * 8
    dataset.BitsStored = bits_stored
    dataset.HighBit = bits_stored - 1
    dataset.PixelRepresentation = 0
    if frames > 1:
        dataset.NumberOfFrames = frames
    if rescale is not None:
        dataset.RescaleSlope, dataset.RescaleIntercept = rescale
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    if include_pixel_data:
        if transfer_syntax is not None:
            dataset.PixelData = encapsulate([pixel_bytes or b"\x00junk" * 20])
            dataset["PixelData"].VR = "OB"
        else:
            dataset.PixelData = pixel_bytes if pixel_bytes is not None else pixels.astype("<u2" if
                                                                           pixels.dtype.itemsize == 2 else
                                                                           pixels.dtype).tobytes()
    buffer = io.BytesIO()
    if preamble:
        file_meta = FileMetaDataset()
        file_meta.TransferSyntaxUID = transfer_syntax or ExplicitVRLittleEndian
        file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
        file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.file_meta = file_meta
        dataset.save_as(buffer, enforce_file_format=True)
    else:
        dataset.save_as(buffer, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


def noise(height=200, width=200):
    """Random 8-bit pixels: they do not compress, so a cut file is really missing image data."""
    return np.random.default_rng(0).integers(0, 256, (height, width), dtype=np.uint8)


def twelve_bit_ramp(rows=80, columns=96, low=0, high=4095):
    return np.tile(np.linspace(low, high, columns).round().astype(np.uint16), (rows, 1))


# --------------------------------------------------------------------------------------------------
# Accepted raster formats
# --------------------------------------------------------------------------------------------------

def sixteen_bit_image():
    values = (np.tile(np.linspace(1000, 60000, 128), (96, 1))).astype(np.uint16)
    return Image.fromarray(values)


ACCEPTED = {
    "png-8bit": lambda: encode(Image.fromarray(gradient()), "PNG"),
    "png-16bit": lambda: encode(sixteen_bit_image(), "PNG"),
    "jpeg-gray": lambda: encode(Image.fromarray(gradient()), "JPEG", quality=95),
    "jpeg-rgb": lambda: encode(Image.fromarray(gradient()).convert("RGB"), "JPEG", quality=95),
    "bmp": lambda: encode(Image.fromarray(gradient()), "BMP"),
    "tiff-16bit": lambda: encode(sixteen_bit_image(), "TIFF"),
    "tiff-16bit-big-endian": lambda: encode(
        Image.frombytes("I;16B", (128, 96), np.asarray(sixteen_bit_image()).astype(">u2").tobytes()), "TIFF"
    ),
    "png-rgba": lambda: encode(Image.fromarray(gradient()).convert("RGBA"), "PNG"),
    "png-palette": lambda: encode(Image.fromarray(gradient()).convert("P"), "PNG"),
    "jpeg-cmyk": lambda: encode(Image.fromarray(gradient()).convert("CMYK"), "JPEG"),
    "tiff-cmyk": lambda: encode(Image.fromarray(gradient()).convert("CMYK"), "TIFF"),
    "png-la": lambda: encode(Image.fromarray(gradient()).convert("LA"), "PNG"),
    "png-bilevel": lambda: encode(Image.fromarray(gradient()).convert("1"), "PNG"),
    "gif-still": lambda: encode(Image.fromarray(gradient()).convert("P"), "GIF"),
    "webp": lambda: encode(Image.fromarray(gradient()).convert("RGB"), "WEBP", lossless=True),
    "tiff-32bit-float": lambda: encode(Image.fromarray(gradient().astype(np.float32) / 7), "TIFF"),
}
EXPECTED_FORMATS = {"png": "PNG", "jpeg": "JPEG", "bmp": "BMP", "tiff": "TIFF", "gif": "GIF", "webp": "WEBP"}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_accepted_formats_decode_to_2d_uint8_with_the_ramp_kept(case):
    film = read_film(ACCEPTED[case]())
    assert isinstance(film, Film)
    assert film.gray.dtype == np.uint8 and film.gray.shape == (96, 128)
    assert film.meta["format"] == EXPECTED_FORMATS[case.split("-")[0]]
    assert film.meta["original_size"] == (128, 96)
    # Every source is a left-to-right ramp: the right edge must be brighter than the left.
    assert int(film.gray[:, -8:].mean()) > int(film.gray[:, :8].mean()) + 100
    assert film.meta["colorfulness"] == pytest.approx(0.0, abs=1.0)


DICOM_CASES = {
    "dicom-12bit-stretched": lambda: make_dicom(twelve_bit_ramp(rows=160, columns=192)),
    "dicom-windowed-with-rescale": lambda: make_dicom(twelve_bit_ramp(rows=160, columns=192), rescale=(2, -1000),
                                                      window=(2000, 3000)),
    "dicom-monochrome1": lambda: make_dicom(twelve_bit_ramp(rows=160, columns=192), photometric="MONOCHROME1"),
    "dicom-multi-frame": lambda: make_dicom(np.stack([twelve_bit_ramp(rows=160, columns=192)] * 2), frames=2),
}
ONE_CALL_CASES = {**ACCEPTED, **DICOM_CASES}


@pytest.mark.parametrize("case", sorted(ONE_CALL_CASES))
@pytest.mark.parametrize("max_side", [None, 64])
def test_one_call_for_film_and_model_input_equals_the_two_calls(case, max_side):
    """Prediction's single-decode path must give exactly what read_film and load_image give (DICOM too: its
    LUTs and window work at full size anyway)."""
    data = ONE_CALL_CASES[case]()
    film, model_input = read_film_and_model_input(data, 48, name="x.img", max_side=max_side)
    expected = read_film(data, name="x.img", max_side=max_side)
    np.testing.assert_array_equal(film.gray, expected.gray)
    assert film.notices == expected.notices
    assert film.meta["colorfulness"] == pytest.approx(expected.meta["colorfulness"])
    assert {k: v for k, v in film.meta.items() if k != "colorfulness"} == {
        k: v for k, v in expected.meta.items() if k != "colorfulness"}
    np.testing.assert_array_equal(model_input, load_image(data, 48))


def test_one_call_refuses_what_read_film_refuses():
    with pytest.raises(ImageLoadError, match="x.png"):
        read_film_and_model_input(b"this is text", 48, name="x.png")


def test_path_and_bytes_give_the_same_film(tmp_path):
    data = ACCEPTED["png-8bit"]()
    path = tmp_path / "film.png"
    path.write_bytes(data)
    from_path, from_bytes = read_film(path), read_film(data)
    np.testing.assert_array_equal(from_path.gray, from_bytes.gray)
    np.testing.assert_array_equal(read_film(str(path)).gray, from_bytes.gray)
    np.testing.assert_array_equal(from_bytes.gray, gradient())


def test_format_is_sniffed_from_bytes_not_the_extension(tmp_path):
    path = tmp_path / "actually_a_jpeg.png"
    path.write_bytes(ACCEPTED["jpeg-gray"]())
    assert read_film(path).meta["format"] == "JPEG"


def test_supported_extensions_are_lower_case_with_a_dot():
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"} <= SUPPORTED_EXTENSIONS
    assert all(extension.startswith(".") and extension == extension.lower() for extension in SUPPORTED_EXTENSIONS)


def test_8bit_gray_is_returned_unchanged_and_bit_depths_are_reported():
    film = read_film(ACCEPTED["png-8bit"]())
    np.testing.assert_array_equal(film.gray, gradient())
    assert film.notices == () and film.meta["mode"] == "L" and film.meta["bit_depth"] == 8
    assert read_film(ACCEPTED["png-16bit"]()).meta["bit_depth"] == 16


def test_16bit_narrow_range_is_stretched_to_full_8bit_range():
    # A 16-bit ramp over only 400 values must not collapse to a couple of gray levels.
    values = np.tile(np.linspace(30000, 30400, 256).round().astype(np.uint16), (64, 1))
    film = read_film(encode(Image.fromarray(values), "PNG"))
    assert film.gray.min() == 0 and film.gray.max() == 255
    assert len(np.unique(film.gray)) > 200
    assert any(notice.startswith("16-bit image scaled to 8 bits") for notice in film.notices)


def test_16bit_scaling_ignores_a_few_extreme_pixels():
    values = np.tile(np.linspace(2000, 3000, 256).round().astype(np.uint16), (256, 1))
    values[0, :10] = 65535  # A burned-in marker must not squash the rest of the film.
    film = read_film(encode(Image.fromarray(values), "TIFF"))
    assert film.gray[128, 128] == pytest.approx(128, abs=3)


def test_blank_16bit_image_is_read_with_a_notice():
    film = read_film(encode(Image.fromarray(np.full((64, 64), 1234, dtype=np.uint16)), "PNG"))
    assert film.gray.max() == 0
    assert any("blank" in notice for notice in film.notices)


def test_rgba_transparency_is_composited_on_black():
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 255
    rgba[:, :32, 3] = 0
    film = read_film(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert film.gray[:, :32].max() == 0 and film.gray[:, 32:].min() == 200
    assert "Transparent areas were composited on black" in film.notices


def test_colourful_image_is_measured_and_flagged():
    rgb = np.zeros((64, 64, 3), dtype=np.uint8)
    rgb[:, :32] = (255, 0, 0)
    rgb[:, 32:] = (0, 0, 255)
    film = read_film(encode(Image.fromarray(rgb), "PNG"))
    assert film.meta["colorfulness"] > COLORFUL_NOTICE_THRESHOLD
    assert any("in colour" in notice for notice in film.notices)
    gray_as_rgb = read_film(ACCEPTED["jpeg-rgb"]())
    assert gray_as_rgb.meta["colorfulness"] < 2 and not any("in colour" in n for n in gray_as_rgb.notices)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # Rotate 90 degrees clockwise to display.
    data = encode(Image.fromarray(gradient(96, 128)), "JPEG", exif=exif.tobytes(), quality=95)
    film = read_film(data)
    assert film.gray.shape == (128, 96)
    assert film.meta["original_size"] == (128, 96)
    assert any(notice.startswith("EXIF orientation applied") for notice in film.notices)
    # Rotated clockwise, the left-to-right ramp becomes top-to-bottom.
    assert int(film.gray[-8:].mean()) > int(film.gray[:8].mean()) + 100


def test_multi_page_tiff_uses_the_first_page_with_a_notice():
    pages = [Image.fromarray(gradient()), Image.fromarray(np.zeros((96, 128), np.uint8))]
    film = read_film(encode(pages[0], "TIFF", save_all=True, append_images=pages[1:]))
    np.testing.assert_array_equal(film.gray, gradient())
    assert "Multi-page TIFF: used page 1 of 2" in film.notices


def test_max_side_downsizes_keeping_the_aspect_ratio():
    film = read_film(encode(Image.fromarray(gradient(300, 600)), "PNG"), max_side=200)
    assert film.gray.shape == (100, 200)
    assert film.meta["original_size"] == (600, 300)
    jpeg = read_film(encode(Image.fromarray(gradient(800, 1000)).convert("RGB"), "JPEG"), max_side=250)
    assert jpeg.gray.shape == (200, 250)


@pytest.mark.parametrize("max_side", [0, -5, 2.5, True])
def test_bad_max_side_is_refused(max_side):
    with pytest.raises(ValueError, match=r"Got max_side=.*expected None or a positive integer"):
        read_film(ACCEPTED["png-8bit"](), max_side=max_side)


# --------------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------------

def zip_bytes():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("film.png", ACCEPTED["png-8bit"]())
    return buffer.getvalue()


def animated_gif():
    frames = [Image.fromarray(gradient()).convert("P"), Image.fromarray(255 - gradient()).convert("P")]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)


REFUSED = {
    "empty": (b"", r"The file is empty \(0 bytes\)"),
    "truncated-png": (encode(Image.fromarray(noise()), "PNG")[:3000],
                      r"could not be decoded: the file looks truncated or damaged"),
    "truncated-jpeg": (encode(Image.fromarray(noise()), "JPEG")[:3000],
                       r"could not be decoded: the file looks truncated or damaged"),
    "corrupt-png-header": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
                           r"could not be decoded: the file looks truncated or damaged"),
    "text": (b"patient,label\n1,Normal\n2,Pneumonia\n" * 5, r"is not an image: it looks like a text file"),
    "zip": (zip_bytes(), r"is not an image: it looks like a ZIP archive"),
    "svg": (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
            b"<rect width='100' height='100'/></svg>",
            r"SVG is a vector drawing, not a radiograph; export the film as PNG or DICOM"),
    "pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", r"is not an image: it is a PDF document"),
    "html": (b"<!DOCTYPE html><html><body>Not found</body></html>", r"looks like a web page \(HTML\)"),
    "unknown-binary": (bytes(range(256)) * 4, r"first bytes match none of PNG, JPEG"),
    "too-small": (encode(Image.new("L", (MIN_SIDE - 1, 200)), "PNG"),
                  rf"is {MIN_SIDE - 1}x200 pixels; Paru needs films at least {MIN_SIDE} pixels"),
    "too-elongated": (encode(Image.new("L", (int(MIN_SIDE * (MAX_ASPECT + 1)), MIN_SIDE)), "PNG"),
                      r"an aspect ratio of 5\.0:1; Paru accepts films up to 4:1"),
    "animated-gif": (animated_gif(), r"is an animated GIF; Paru reads single still films"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_unusable_files_are_refused_with_a_clear_message(case):
    data, message = REFUSED[case]
    with pytest.raises(ImageLoadError, match=message):
        read_film(data)


def test_refusals_name_the_file_and_are_value_errors(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError, match=r"The file '.*empty\.png' is empty \(0 bytes\)"):
        read_film(path)
    with pytest.raises(ValueError, match=r"The file 'upload\.png' is not an image: it looks like a ZIP"):
        read_film(zip_bytes(), name="upload.png")


def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(ImageLoadError, match=r"There is no file at '.*nothing\.png'"):
        read_film(tmp_path / "nothing.png")
    with pytest.raises(ImageLoadError, match=r"is a folder, not a film"):
        read_film(tmp_path)


def test_heic_without_pillow_heif_gets_an_install_hint():
    try:
        import pillow_heif  # noqa: F401
        pytest.skip("pillow-heif is installed, so HEIC files are decoded")
    except ImportError:
        pass
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    with pytest.raises(ImageLoadError, match=r"HEIC/HEIF photo, which needs the pillow-heif package: pip install"):
        read_film(heic)


def test_dicom_without_pydicom_gets_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", None)  # Makes `import pydicom` raise ImportError.
    with pytest.raises(ImageLoadError, match=r"is a DICOM file, and reading DICOM needs pydicom: pip install "
                                             r"pydicom"):
        read_film(b"\x00" * 128 + b"DICM" + b"\x00" * 64)


def test_wrong_source_type_is_a_type_error():
    with pytest.raises(TypeError, match=r"Got source of type int; expected a path"):
        read_film(42)


# --------------------------------------------------------------------------------------------------
# Decompression bombs
# --------------------------------------------------------------------------------------------------

def test_huge_png_header_is_refused_before_decoding():
    with pytest.raises(ImageLoadError, match=(
        r"^The image is 30000x30000 pixels \(900 megapixels\); Paru accepts at most 100 megapixels\. "
        r"Downsize it before uploading\.$"
    )):
        read_film(png_claiming_size(30000, 30000))


def test_bomb_far_beyond_pillows_own_limit_still_gets_paru_message():
    with pytest.raises(ImageLoadError, match=r"is 60000x60000 pixels \(3,600 megapixels\)"):
        read_film(png_claiming_size(60000, 60000), name="bomb.png")


def test_pixel_limit_follows_max_pixels(monkeypatch):
    monkeypatch.setattr(common, "MAX_PIXELS", 10_000)
    with pytest.raises(ImageLoadError, match=r"The image is 128x96 pixels \(0\.0123 megapixels\); Paru "
                                             r"accepts at most 0\.01 megapixels"):
        read_film(ACCEPTED["png-8bit"]())


def test_pillow_limit_is_aligned_with_max_pixels():
    assert Image.MAX_IMAGE_PIXELS == MAX_PIXELS


# --------------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------------

@requires_pydicom
def test_dicom_12bit_without_window_is_stretched_and_meta_is_read():
    film = read_film(make_dicom(twelve_bit_ramp(low=1000, high=1400)))
    assert film.gray.shape == (80, 96) and film.gray.dtype == np.uint8
    assert film.gray.min() == 0 and film.gray.max() == 255
    assert any(notice.startswith("12-bit DICOM without a window scaled to 8 bits") for notice in film.notices)
    assert film.meta["format"] == "DICOM"
    assert film.meta["modality"] == "DX" and film.meta["view_position"] == "PA"
    assert film.meta["photometric"] == "MONOCHROME2" and film.meta["bit_depth"] == 12
    assert film.meta["original_size"] == (96, 80)
    assert film.meta["colorfulness"] == 0.0


@requires_pydicom
def test_dicom_monochrome1_is_inverted():
    pixels = np.full((80, 96), 100, dtype=np.uint16)
    pixels[:, 48:] = 4000  # Bright in the raw values.
    monochrome2 = read_film(make_dicom(pixels)).gray
    monochrome1 = read_film(make_dicom(pixels, photometric="MONOCHROME1"))
    assert monochrome2[0, 90] == 255 and monochrome2[0, 5] == 0
    assert monochrome1.gray[0, 90] == 0 and monochrome1.gray[0, 5] == 255
    assert any("MONOCHROME1" in notice for notice in monochrome1.notices)


@requires_pydicom
def test_dicom_rescale_and_window_are_applied():
    # Stored values 0..4095 become 2*value - 1000; the window 0 +- 200 covers stored values 400..600.
    pixels = np.zeros((80, 96), dtype=np.uint16)
    pixels[:, :32], pixels[:, 32:64], pixels[:, 64:] = 300, 500, 700
    film = read_film(make_dicom(pixels, rescale=(2, -1000), window=(0, 400)))
    assert film.gray[0, 0] == 0 and film.gray[0, 90] == 255
    assert film.gray[0, 40] == pytest.approx(128, abs=2)
    assert not any("without a window" in notice for notice in film.notices)


@requires_pydicom
def test_dicom_window_keeps_float_precision():
    # A narrow window over 12-bit data must use many gray levels, not a handful.
    film = read_film(make_dicom(twelve_bit_ramp(low=1800, high=2200), window=(2000, 400)))
    assert len(np.unique(film.gray)) > 80


@requires_pydicom
def test_dicom_multi_frame_uses_the_first_frame():
    frames = np.stack([twelve_bit_ramp(), np.zeros((80, 96), np.uint16), np.zeros((80, 96), np.uint16)])
    film = read_film(make_dicom(frames, frames=3))
    assert "Multi-frame DICOM: used frame 1 of 3" in film.notices
    assert film.gray[:, -1].min() == 255 and film.gray[:, 0].max() == 0


@requires_pydicom
def test_dicom_without_preamble_is_read():
    data = make_dicom(twelve_bit_ramp(), preamble=False)
    assert data[128:132] != b"DICM"
    assert read_film(data).gray.max() == 255


@requires_pydicom
def test_dicom_with_8bit_pixels_is_used_as_is():
    pixels = gradient(80, 96)
    film = read_film(make_dicom(pixels, bits_stored=8))
    np.testing.assert_array_equal(film.gray, pixels)


@requires_pydicom
def test_dicom_colour_is_refused():
    rgb = np.zeros((80, 96, 3), dtype=np.uint8)
    data = make_dicom(rgb[..., 0], photometric="RGB", samples_per_pixel=3, bits_stored=8,
                      pixel_bytes=rgb.tobytes())
    with pytest.raises(ImageLoadError, match=r"is a colour DICOM image \(Photometric Interpretation RGB, 3 "
                                             r"samples per pixel\); Paru reads grayscale"):
        read_film(data)


@requires_pydicom
def test_dicom_without_pixel_data_is_refused():
    with pytest.raises(ImageLoadError, match=r"is a DICOM file without an image \(it has no Pixel Data"):
        read_film(make_dicom(include_pixel_data=False))


@requires_pydicom
def test_dicom_jpeg2000_that_cannot_be_decoded_names_syntax_and_package():
    from pydicom.uid import JPEG2000Lossless

    data = make_dicom(transfer_syntax=JPEG2000Lossless)
    with pytest.raises(ImageLoadError, match=(
        r"stores its pixel data as JPEG 2000 .*\(1\.2\.840\.10008\.1\.2\.4\.90\).*JPEG 2000 pixel data needs "
        r"pylibjpeg with pylibjpeg-openjpeg, pinned in Paru's requirements.txt: pip install -r requirements.txt"
    )):
        read_film(data, name="study.dcm")


@requires_pydicom
def test_dicom_with_jpeg_compressed_pixels_is_decoded():
    from pydicom.uid import JPEGBaseline8Bit

    pixels = gradient(80, 96)
    jpeg = encode(Image.fromarray(pixels), "JPEG", quality=95)
    film = read_film(make_dicom(pixels, bits_stored=8, transfer_syntax=JPEGBaseline8Bit, pixel_bytes=jpeg))
    assert np.abs(film.gray.astype(int) - pixels).max() <= 8
    assert film.meta["transfer_syntax"] == JPEGBaseline8Bit


@requires_pydicom
def test_dicom_damaged_rle_pixel_data_is_called_damaged():
    from pydicom.uid import RLELossless

    with pytest.raises(ImageLoadError, match=r"could not be decoded: the file looks truncated or damaged"):
        read_film(make_dicom(transfer_syntax=RLELossless))


@requires_pydicom
def test_dicom_truncated_pixel_data_is_refused():
    data = make_dicom(twelve_bit_ramp(), pixel_bytes=b"\x00\x01" * 100)
    with pytest.raises(ImageLoadError, match=r"could not be decoded: the file looks truncated or damaged"):
        read_film(data)


@requires_pydicom
def test_dicom_too_small_is_refused():
    with pytest.raises(ImageLoadError, match=r"is 32x32 pixels; Paru needs films at least 64 pixels"):
        read_film(make_dicom(np.zeros((32, 32), np.uint16)))


@requires_pydicom
def test_dicom_non_radiograph_modality_gets_a_notice():
    film = read_film(make_dicom(twelve_bit_ramp(), modality="CT"))
    assert any("modality is CT" in notice for notice in film.notices)


# --------------------------------------------------------------------------------------------------
# Model input
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(96, 128), (300, 200), (224, 224), (96, 128, 1)])
@pytest.mark.parametrize("image_size", [224, 64])
def test_to_model_input_is_a_uint8_square_with_one_channel(shape, image_size):
    gray = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    model_input = to_model_input(gray, image_size)
    assert model_input.shape == (image_size, image_size, 1) and model_input.dtype == np.uint8


def test_to_model_input_keeps_pixel_values_in_0_255():
    model_input = to_model_input(gradient(500, 700))
    assert model_input.min() == 0 and model_input.max() == 255


@pytest.mark.parametrize("bad", [np.zeros((64, 64), np.float32), np.zeros((64, 64, 3), np.uint8),
                                 np.zeros(64, np.uint8)])
def test_to_model_input_refuses_non_gray_arrays(bad):
    with pytest.raises(ValueError, match=r"expected a 2-D uint8 grayscale image"):
        to_model_input(bad)


def test_to_model_input_refuses_a_bad_size():
    with pytest.raises(ValueError, match=r"Got image_size=0; expected a positive integer"):
        to_model_input(gradient(), 0)


@pytest.mark.parametrize("image_size", [True, 2.0, "224", None])
def test_image_size_must_be_an_integer_for_every_entry_point(image_size):
    data = ACCEPTED["png-8bit"]()
    for call in (lambda: to_model_input(gradient(), image_size), lambda: load_image(data, image_size),
                 lambda: read_film_and_model_input(data, image_size)):
        with pytest.raises(ValueError, match=r"Got image_size=.*; expected a positive integer such as 224\."):
            call()


def test_squeeze_channel_drops_only_a_single_trailing_channel():
    assert squeeze_channel(np.zeros((4, 5, 1), np.uint8)).shape == (4, 5)
    assert squeeze_channel(np.zeros((4, 5), np.uint8)).shape == (4, 5)
    assert squeeze_channel(np.zeros((4, 5, 3), np.uint8)).shape == (4, 5, 3)
    assert squeeze_channel([[1, 2], [3, 4]]).shape == (2, 2)


@requires_pydicom
def test_load_image_decodes_every_kind_to_model_input():
    for data in (ACCEPTED["png-8bit"](), ACCEPTED["jpeg-rgb"](), ACCEPTED["tiff-16bit"](),
                 make_dicom(twelve_bit_ramp())):
        model_input = load_image(data, image_size=96)
        assert model_input.shape == (96, 96, 1) and model_input.dtype == np.uint8


def test_load_image_matches_read_film_then_to_model_input():
    data = encode(Image.fromarray(gradient(700, 900)), "PNG")
    expected = to_model_input(read_film(data, max_side=448).gray, 224)
    np.testing.assert_array_equal(load_image(data), expected)


def test_load_image_refusals_are_image_load_errors():
    with pytest.raises(ImageLoadError, match=r"The file is empty \(0 bytes\)"):
        load_image(b"")


@pytest.mark.skipif(not (SHARED_DATA / "samples").is_dir(), reason="shared real data not present")
def test_load_image_on_a_real_chest_film():
    path = sorted((SHARED_DATA / "samples").glob("*/*.png"))[0]
    model_input = load_image(path)
    assert model_input.shape == (224, 224, 1) and model_input.dtype == np.uint8
    assert model_input.std() > 20  # A real radiograph, not a blank.
    film = read_film(path)
    assert film.meta["format"] == "PNG" and film.notices == ()


def test_warm_decode_of_1024_png_is_fast():
    data = encode(Image.fromarray(np.tile(gradient(1024, 1024), (1, 1))), "PNG")
    load_image(data)
    start = time.perf_counter()
    for _ in range(5):
        load_image(data)
    # A few ms on a workstation; the bound is loose so that slow CI machines do not fail.
    assert (time.perf_counter() - start) / 5 < 0.25


# --------------------------------------------------------------------------------------------------
# `name` is a label only
# --------------------------------------------------------------------------------------------------

def test_name_is_only_echoed_never_opened(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("decoy.png").write_bytes(encode(Image.new("L", (100, 100), 255), "PNG"))
    black = encode(Image.new("L", (100, 100), 0), "PNG")
    # The bytes are decoded, not the file the name points at.
    assert read_film(black, name="decoy.png").gray.max() == 0
    assert read_film(black, name="../../etc/passwd").gray.shape == (100, 100)
    with pytest.raises(ImageLoadError, match=r"The file '\.\./\.\./etc/passwd' is empty \(0 bytes\)"):
        read_film(b"", name="../../etc/passwd")
    with pytest.raises(ImageLoadError, match=r"'\.\./\.\./etc/passwd' is not an image: it looks like a text"):
        read_film(b"root:x:0:0:root:/root:/bin/bash\n" * 4, name="../../etc/passwd")


def test_file_objects_are_read_and_their_name_is_a_label_only():
    upload = io.BytesIO(ACCEPTED["png-8bit"]())
    upload.name = "upload.png"
    np.testing.assert_array_equal(read_film(upload).gray, gradient())
    empty = io.BytesIO(b"")
    empty.name = "../secret.png"
    with pytest.raises(ImageLoadError, match=r"The file '\.\./secret\.png' is empty"):
        read_film(empty)


def test_module_imports_neither_tensorflow_nor_streamlit():
    code = ("import sys; import core.imaging.loader; "
            "print(sorted(m for m in ('tensorflow', 'streamlit', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
