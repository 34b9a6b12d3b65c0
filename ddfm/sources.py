"""Source images as DDFM reads them: decoded RGB and the release's grey, and the pair checks."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Union

import numpy as np
from PIL import Image

from util.images import ImageError, read_rgb, rgb_to_gray_float

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
    """Paths, PIL images, (H, W) grey arrays (0..255) and (H, W, 3) RGB uint8 arrays."""
    if isinstance(image, (str, os.PathLike)):
        rgb = read_rgb(image)
        return Source(rgb, rgb_to_gray_float(rgb), str(image))
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL image
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
        return Source(rgb, rgb_to_gray_float(rgb), name)
    array = np.asarray(image)
    if array.ndim == 2:
        gray = array.astype(np.float32)
        if gray.size and (gray.min() < 0 or gray.max() > 255):
            raise ImageError(f"{name}: grey values must lie in 0..255, got {gray.min()}..{gray.max()}")
        rgb8 = np.repeat(np.clip(np.round(gray), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        return Source(rgb8, np.round(gray).astype(np.float32), name)
    if array.ndim == 3 and array.shape[2] in (3, 4) and array.dtype == np.uint8:
        rgb = np.ascontiguousarray(array[..., :3])
        return Source(rgb, rgb_to_gray_float(rgb), name)
    raise ImageError(f"{name}: expected (H, W) grey or (H, W, 3) uint8 RGB, got shape "
                     f"{array.shape} dtype {array.dtype}")


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
