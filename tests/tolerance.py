"""Numeric tolerances of the tests, stated against the compared quantity's own scale.

A difference is counted in units of floating-point resolution of a magnitude: one unit is
``eps * magnitude`` (eps = 2**-23 for float32, 2**-52 for float64), where the magnitude is either
each element's own (elementwise quantities: a square root, a quotient) or one common scale
(results of FFTs, convolutions and long sums, whose rounding follows the size of the whole array,
not of each element). Bounds in these units hold whatever kernel the CPU dispatches to (AVX-512,
AVX2, NEON, scalar) and however threads split a reduction: such choices move a result by a few
units of resolution, while a real defect (a dropped term, a wrong sign, a misapplied constant)
moves it by thousands.
"""
from __future__ import annotations

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)   # 2**-23
EPS64 = float(np.finfo(np.float64).eps)   # 2**-52


def _as_float64(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def ulps(got, want, scale=None, eps: float = EPS32) -> float:
    """Largest ``|got - want|`` in units of ``eps`` times the magnitude: each element's own
    ``|want|`` (``scale=None``), or the common ``scale`` (a number, or ``"max"`` for the largest
    ``|want|``). Magnitudes below the smallest normal float32 count as that, so exact zeros
    compare as zeros."""
    got64, want64 = _as_float64(got), _as_float64(want)
    assert got64.shape == want64.shape, (got64.shape, want64.shape)
    if scale == "max":
        scale = np.abs(want64).max(initial=0.0)
    magnitude = np.abs(want64) if scale is None else np.float64(scale)
    magnitude = np.maximum(magnitude, np.finfo(np.float32).tiny)
    return float((np.abs(got64 - want64) / (eps * magnitude)).max(initial=0.0))


def rel_ulps(got: float, want: float, eps: float = EPS32) -> float:
    """``|got - want|`` of two scalars in units of ``eps * |want|``."""
    return ulps(np.float64(got), np.float64(want), eps=eps)
