"""Grad-CAM display: a CAM painted over a film as a heatmap, the matching colour legend, and the colour table.

Everything here is NumPy and Pillow only (no TensorFlow), so pages and the CLI can draw overlays without
loading a model.

Example::

    picture = overlay(film.gray, cams[0])   # uint8 RGB at the film's own size
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from core.imaging.loader import squeeze_channel

# The (256, 3) colour lookup table of the heatmap, built once on first use.
_COLORMAP: np.ndarray | None = None


def overlay(gray: np.ndarray, cam: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """Paint a CAM over a film as a heatmap that fades out where the CAM is cold.

    The CAM is resized to the film's size (Pillow bilinear), coloured with a turbo colormap (blue = 0,
    green/yellow = middle, dark red = 1) and blended over the gray film with a per-pixel alpha of
    `opacity * cam`: hot regions are tinted up to `opacity`, cold regions keep the film as it is.

    Args:
        gray: 2-D uint8 film (height, width) of any size, such as Film.gray; (height, width, 1) is
            accepted too.
        cam: 2-D CAM of any size with values in [0, 1], such as one of GradCam's cams. Values outside are
            clipped and non-finite values count as 0.
        opacity: the heatmap's opacity where the CAM is 1, in [0, 1] (default 0.45). 0 returns the film.

    Returns:
        uint8 RGB array (height, width, 3) at the film's size.

    Raises:
        ValueError: `gray` is not a 2-D uint8 image, `cam` is not 2-D, or opacity is outside [0, 1].

    Example::

        picture = overlay(film.gray, cams[0])   # st.image(picture)
    """
    gray = squeeze_channel(gray)
    if gray.ndim != 2 or gray.dtype != np.uint8 or 0 in gray.shape:
        raise ValueError(
            f"Got a film of shape {gray.shape} and dtype {gray.dtype}; expected a 2-D uint8 grayscale "
            "image (height, width) such as core.imaging.loader.read_film(...).gray."
        )
    if not 0.0 <= float(opacity) <= 1.0:
        raise ValueError(f"Got opacity={opacity}; it must be in [0, 1] (0 shows only the film).")
    if float(opacity) == 0.0:
        return np.repeat(gray[:, :, np.newaxis], 3, axis=2)
    cam = _resize_cam(clean_cam(cam), gray.shape)
    # film * (1 - alpha) + heat * alpha, written as film + alpha * (heat - film) in place in one float32
    # buffer: the same picture with half the full-size temporaries. A convex mix of two values in 0..255
    # stays in 0..255, so rounding needs no clipping. np.take on the flat index avoids the slower fancy
    # indexing with a 2-D index.
    index = np.round(cam * 255).astype(np.intp)
    blended = np.take(colormap() * np.float32(255.0), index.ravel(), axis=0).reshape(cam.shape + (3,))
    film = gray.astype(np.float32)[:, :, np.newaxis]
    blended -= film
    blended *= (cam * np.float32(opacity))[:, :, np.newaxis]
    blended += film
    np.rint(blended, out=blended)
    return blended.astype(np.uint8)


def colorbar(height: int = 256, width: int = 16) -> np.ndarray:
    """The overlay's colour legend: uint8 RGB (height, width, 3), CAM value 1 at the top and 0 at the bottom."""
    if height < 2 or width < 1:
        raise ValueError(f"Got height={height}, width={width}; expected height >= 2 and width >= 1.")
    values = np.linspace(1.0, 0.0, int(height))
    column = colormap()[np.round(values * 255).astype(np.intp)]
    return np.round(np.repeat(column[:, np.newaxis, :], int(width), axis=1) * 255).astype(np.uint8)


def colormap() -> np.ndarray:
    """(256, 3) float32 turbo colours in [0, 1], from Google's polynomial approximation of turbo.

    Row i is the colour of CAM value i / 255. Built once; callers must not modify it.
    """
    global _COLORMAP
    if _COLORMAP is None:
        x = np.linspace(0.0, 1.0, 256)
        powers = np.stack([np.ones_like(x), x, x**2, x**3, x**4, x**5], axis=1)
        coefficients = np.array([
            [0.13572138, 4.61539260, -42.66032258, 132.13108234, -152.94239396, 59.28637943],
            [0.09140261, 2.19418839, 4.84296658, -14.18503333, 4.27729857, 2.82956604],
            [0.10667330, 12.64194608, -60.58204836, 110.36276771, -89.90310912, 27.34824973],
        ])
        _COLORMAP = np.clip(powers @ coefficients.T, 0.0, 1.0).astype(np.float32)
    return _COLORMAP


def clean_cam(cam, clip_top: bool = True) -> np.ndarray:
    """A 2-D float32 CAM with non-finite values set to 0 and, when clip_top, values clipped to [0, 1].

    (height, width, 1) is accepted too. Raises ValueError for anything that is not one non-empty 2-D map.
    """
    cam = squeeze_channel(np.asarray(cam, dtype=np.float32))
    if cam.ndim != 2 or 0 in cam.shape:
        raise ValueError(
            f"Got a CAM of shape {cam.shape}; expected one 2-D map (height, width), such as cams[0] "
            "from GradCam."
        )
    cam = np.nan_to_num(cam, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(cam, 0.0, 1.0) if clip_top else cam


def _resize_cam(cam: np.ndarray, shape: tuple) -> np.ndarray:
    """Resize a 2-D float CAM to (height, width) with Pillow's bilinear filter, values kept in [0, 1]."""
    height, width = shape
    if cam.shape != (height, width):
        image = Image.fromarray(np.ascontiguousarray(cam, dtype=np.float32))  # mode "F"
        cam = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))
    return np.clip(cam, 0.0, 1.0)
