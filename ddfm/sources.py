"""Source images as DDFM reads them: decoded RGB and the release's grey, and the pair checks."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Union

import numpy as np
from PIL import Image

from util.images import ImageError, rgb_to_gray_float, to_rgb8

ImageLike = Union[str, os.PathLike, np.ndarray, Image.Image]


@dataclass
class Source:
    """One decoded source image: RGB as decoded and its grey (0..255 float32, the release's)."""
    rgb: np.ndarray
    gray: np.ndarray
    name: str

    @property
    def has_chroma(self) -> bool:
        return not (np.array_equal(self.rgb[..., 0], self.rgb[..., 1])
                    and np.array_equal(self.rgb[..., 1], self.rgb[..., 2]))


def load_source(image: ImageLike, name: str = "image") -> Source:
    """A source from a file path, a PIL image or a numpy array, by one rule
    (:func:`util.images.to_rgb8`): files and PIL images by their mode (upright by EXIF
    orientation; 16-bit grey scaled by 1/257; floating point refused), arrays by their dtype
    (uint8 as is, uint16 by 1/257, other integers in 0..255, floats refused), (H, W) grey,
    (H, W, 3) RGB or (H, W, 4) RGBA. Anything else is an :class:`ImageError` naming ``name``
    (a path is its own name)."""
    if isinstance(image, (str, os.PathLike)):
        name = str(image)
    rgb = to_rgb8(image, name)
    return Source(rgb, rgb_to_gray_float(rgb), name)


def check_pair(ir: Source, vis: Source, crop_multiple: int = 32) -> None:
    """Raise :class:`ImageError` naming the file when a pair cannot be fused: sizes that differ,
    or a side shorter than ``crop_multiple``."""
    (h, w), (hb, wb) = ir.gray.shape, vis.gray.shape
    if (h, w) != (hb, wb):
        raise ImageError(f"{ir.name}: size {w}x{h} differs from its partner {vis.name} ({wb}x{hb}); "
                         "resize one to match")
    if min(h, w) < crop_multiple:
        raise ImageError(f"{ir.name}: {w}x{h} is smaller than {crop_multiple} px on a side; "
                         f"use images of at least {crop_multiple}x{crop_multiple}")
