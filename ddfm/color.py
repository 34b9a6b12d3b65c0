"""Colour transforms, as tensors on the run device (batch-safe, no host round trip).

The release converts x0 to YCbCr through scikit-image on the CPU every step
(``rgb_to_ycbcr(x0) / 255`` and ``ycbcr_to_rgb(ycbcr * 255)``). scikit-image's ``rgb2ycbcr`` is
the studio-swing ITU-R BT.601 transform for RGB in [0, 1]; the release feeds it x0 in [-1, 1]
as if it were [0, 1], then divides by 255. We reproduce that exactly (``golden/color.npz``):

    ycbcr_over_255 = (M @ rgb + [16, 128, 128]) / 255          (float32, as skimage on float32)
    rgb            = M^-1 @ (ycbcr_over_255 * 255 - [16, 128, 128])   (float64, then float32)

The output side (``luma_bt601``) is OpenCV's float ``COLOR_RGB2YCrCb`` Y channel: no offset.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ddfm.sources import Source

# scikit-image's ycbcr_from_rgb (rows: Y, Cb, Cr; columns: R, G, B).
YCBCR_FROM_RGB = np.array([[65.481, 128.553, 24.966],
                           [-37.797, -74.203, 112.0],
                           [112.0, -93.786, -18.214]], dtype=np.float64)
RGB_FROM_YCBCR = np.linalg.inv(YCBCR_FROM_RGB)
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float64)


def _mix(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 colour matrix to (N, 3, H, W) channels."""
    return torch.einsum("ij,njhw->nihw", matrix, image)


def rgb_to_ycbcr_over_255(rgb: torch.Tensor) -> torch.Tensor:
    """The release's per-step luminance transform: studio-swing YCbCr of ``rgb`` treated as
    [0, 1] RGB, divided by 255. ``rgb`` is (N, 3, H, W); returns float32 (N, 3, H, W)."""
    rgb = rgb.float()
    matrix = torch.as_tensor(YCBCR_FROM_RGB, dtype=torch.float32, device=rgb.device)
    offset = torch.as_tensor(YCBCR_OFFSET, dtype=torch.float32, device=rgb.device)
    ycbcr = _mix(matrix, rgb) + offset.view(1, 3, 1, 1)
    return ycbcr / 255


def _wide_dtype(device: torch.device) -> torch.dtype:
    # The release inverts in float64; MPS has no float64, where float32 is within 1e-6.
    return torch.float32 if device.type == "mps" else torch.float64


def ycbcr_over_255_to_rgb(ycbcr_over_255: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr_over_255` exactly as the release applies it: the float32
    values are multiplied by 255 in float32, then converted in float64, then cast to float32."""
    scaled = (ycbcr_over_255.float() * 255)
    wide = _wide_dtype(scaled.device)
    matrix = torch.as_tensor(RGB_FROM_YCBCR, dtype=wide, device=scaled.device)
    offset = torch.as_tensor(YCBCR_OFFSET, dtype=wide, device=scaled.device)
    rgb = _mix(matrix, scaled.to(wide) - offset.view(1, 3, 1, 1))
    return rgb.float()


def luma_bt601(rgb: torch.Tensor) -> torch.Tensor:
    """Y = 0.299 R + 0.587 G + 0.114 B (OpenCV's float RGB2YCrCb Y, no offset): (N,3,H,W) ->
    (N,1,H,W), float32."""
    rgb = rgb.float()
    return (rgb[:, 0:1] * 0.299 + rgb[:, 1:2] * 0.587 + rgb[:, 2:3] * 0.114)


def ycbcr_full_from_rgb(rgb: torch.Tensor) -> torch.Tensor:
    """Full-range BT.601 YCbCr of 0..255 RGB (the convention fusion papers use to put a fused
    luminance back into colour): (N,3,H,W) float -> (N,3,H,W) with Cb, Cr centred on 128."""
    rgb = rgb.float()
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = (b - y) * 0.564 + 128.0
    cr = (r - y) * 0.713 + 128.0
    return torch.cat([y, cb, cr], dim=1)


def rgb_from_ycbcr_full(ycbcr: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`ycbcr_full_from_rgb` (0..255 in and out, not clipped)."""
    y, cb, cr = ycbcr[:, 0:1], ycbcr[:, 1:2] - 128.0, ycbcr[:, 2:3] - 128.0
    r = y + 1.403 * cr
    g = y - 0.714 * cr - 0.344 * cb
    b = y + 1.773 * cb
    return torch.cat([r, g, b], dim=1)


def color_source(ir: Source, vis: Source) -> Optional[Source]:
    """Where chroma comes from: the visible-role image if it has colour (infrared-visible),
    else the infrared-role image if it has (PET/SPECT pseudo-colour), else none (grey)."""
    for candidate in (vis, ir):
        if candidate.has_chroma:
            return candidate
    return None


def colorize(gray: np.ndarray, ir: Source, vis: Source, height: int, width: int) -> np.ndarray:
    """Fused luminance with the colour source's chroma: Y = the fused grey, Cb/Cr = those of
    the colour source (full-range BT.601, the field's convention), back to 8-bit RGB. With no
    colour source the grey result is returned as RGB (grey stays grey)."""
    source = color_source(ir, vis)
    if source is None:
        return np.repeat(gray[..., None], 3, axis=2)
    src = torch.from_numpy(source.rgb[:height, :width].astype(np.float32)).permute(2, 0, 1)[None]
    ycbcr = ycbcr_full_from_rgb(src)
    ycbcr[:, 0] = torch.from_numpy(gray.astype(np.float32))
    rgb = rgb_from_ycbcr_full(ycbcr)[0].permute(1, 2, 0)
    return torch.round(rgb).clamp(0, 255).to(torch.uint8).numpy()
