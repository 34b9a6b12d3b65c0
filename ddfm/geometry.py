"""The size the UNet sees: sources cropped top-left (released) or reflect-padded to a multiple
of ``crop_multiple``, and the checks that a batch can be fused as one."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ddfm.config import FuseOptions
from ddfm.sources import Source, check_pair


def working_size(height: int, width: int, opts: FuseOptions) -> tuple[int, int]:
    """The size the UNet sees: cropped down (``size="crop"``) or padded up to the multiple."""
    m = opts.crop_multiple
    if opts.size == "crop":
        return height - height % m, width - width % m
    return -(-height // m) * m, -(-width // m) * m


def to_tensor(grays: Sequence[np.ndarray], opts: FuseOptions, device) -> torch.Tensor:
    """Grey 0..255 -> (N, 1, h, w) in [-1, 1] on ``device``: each image cropped top-left to its
    working size ("crop") or reflect-padded up to it ("pad")."""
    tensors = []
    for gray in grays:
        height, width = gray.shape
        work_h, work_w = working_size(height, width, opts)
        t = torch.from_numpy(np.ascontiguousarray(gray[:min(height, work_h), :min(width, work_w)]))
        t = ((t[None, None] / 255) * 2 - 1).to(device)
        if (work_h, work_w) != tuple(t.shape[-2:]):
            t = F.pad(t, (0, work_w - t.shape[-1], 0, work_h - t.shape[-2]), mode="reflect")
        tensors.append(t)
    return torch.cat(tensors)


def check_batch(ir: Sequence[Source], vis: Sequence[Source], opts: FuseOptions,
                size_multiple: int) -> tuple[int, int]:
    """Raise when the batch cannot be fused as one by a UNet whose input sides must be
    multiples of ``size_multiple``; return its output size (h, w): the cropped size, or the
    source size with ``size="pad"``."""
    if not ir or len(ir) != len(vis):
        raise ValueError("need the same positive number of infrared and visible sources")
    m = opts.crop_multiple
    if m % size_multiple:
        raise ValueError(f"crop_multiple {m} does not fit the UNet, whose input sides must be "
                         f"multiples of {size_multiple}; use {size_multiple} or a multiple of it")
    for a, b in zip(ir, vis):
        check_pair(a, b, m)
    height, width = ir[0].gray.shape
    work_h, work_w = working_size(height, width, opts)
    same = (lambda a: a.gray.shape == (height, width)) if opts.size == "pad" else \
        (lambda a: working_size(*a.gray.shape, opts) == (work_h, work_w))
    if not all(same(a) for a in ir):
        raise ValueError("the pairs of one batch must share one working size "
                         "(sample.py groups them; call once per size)")
    return (work_h, work_w) if opts.size == "crop" else (height, width)
