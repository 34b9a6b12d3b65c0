"""Contact sheets: the two sources and the fused result side by side, labelled."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LABEL_HEIGHT = 22
GAP = 6


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    return image[..., :3]


def contact_sheet(panels: list[tuple[str, np.ndarray]], max_panel_width: int = 512) -> np.ndarray:
    """One row of labelled panels (uint8 grey or RGB, any sizes) on a white background, each
    scaled to the same height (at most ``max_panel_width`` wide). Returns (H, W, 3) uint8."""
    font = ImageFont.load_default()
    height = max(p.shape[0] for _, p in panels)
    scaled = []
    for label, image in panels:
        im = Image.fromarray(_as_rgb(image))
        factor = min(height / im.height, max_panel_width / im.width)
        size = (max(1, round(im.width * factor)), max(1, round(im.height * factor)))
        scaled.append((label, im.resize(size, Image.BILINEAR) if size != im.size else im))
    total_w = sum(im.width for _, im in scaled) + GAP * (len(scaled) + 1)
    total_h = max(im.height for _, im in scaled) + LABEL_HEIGHT + 2 * GAP
    sheet = Image.new("RGB", (total_w, total_h), "white")
    draw = ImageDraw.Draw(sheet)
    x = GAP
    for label, im in scaled:
        draw.text((x + 2, GAP // 2 + 2), label, fill="black", font=font)
        sheet.paste(im, (x, LABEL_HEIGHT + GAP))
        x += im.width + GAP
    return np.asarray(sheet)


def grid(rows: list[np.ndarray]) -> np.ndarray:
    """Stack sheets vertically (padded to the widest) for a dataset figure."""
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(padded, axis=0)
