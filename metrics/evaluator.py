"""Image-fusion quality metrics, equal to the field's reference evaluator by default.

The numbers in DDFM, CDDFuse and the infrared/visible and medical fusion papers that follow them
come from the same author's evaluator (CDDFuse ``utils/Evaluator.py``, built on OpenCV,
scikit-image 0.19 and scikit-learn). This module computes the same twelve metrics with numpy
and scipy only, vectorised (about 50 ms of one core for a 512x384 pair, all twelve; the
reference takes about 1 s), and -- in the ``reference`` profile -- to the same numbers: tested
against the reference's own output to 1e-6 relative, and bit for bit for the metrics it
computes in float32. The reference's quirks are kept on purpose, because they move the numbers
a lot (SSIM with a data range of 2, MI in nats, VIF and SSIM summed over the two sources, PSNR
peaked at max(F), Qabf's strength ratio taken as g_F where the two strengths are equal); the
``textbook`` profile changes the two that matter most (SSIM data range 255, MI in bits).

Inputs are 2-D grey images in 0..255 (``util.images.read_gray``), at least 17x17. They are
converted to float32 first, as the reference reads its images as float32, and SD, SF, AG, SCD,
Qabf, SSIM, MSE and CC are computed in float32 with the reference's rounding (SSIM moves by
~1e-5 relative if computed in float64). Results are Python floats.

=======  ======================================================================================
Metric   Definition (F fused, A and B the sources; A plays the infrared role)
=======  ======================================================================================
EN       Shannon entropy, log2, of the 256-bin histogram of F rounded to uint8.
SD       Population standard deviation of F.
SF       sqrt(mean(horizontal first differences^2) + mean(vertical first differences^2)).
AG       mean(sqrt((Gx^2 + Gy^2) / 2)), Gx, Gy = numpy-style gradients (central differences
         inside, one-sided at the borders).
MI       MI(F, A) + MI(F, B); each distinct grey value its own bin (scikit-learn's
         ``mutual_info_score``); nats in ``reference``, bits in ``textbook``.
SCD      corr(A, F - B) + corr(B, F - A) (sum of the correlations of differences).
VIF      VIF(A -> F) + VIF(B -> F), pixel-domain VIF: 4 scales, Gaussian windows of
         N = 2^(5-s) + 1 taps with sd N/5, 'valid' filtering, decimation by 2 between scales,
         sigma_n^2 = 2; each VIF is sum(log(1 + g^2 s_A^2 / (s_v^2 + sigma_n^2))) over
         sum(log(1 + s_A^2 / sigma_n^2)), summed over the scales before dividing.
Qabf     Xydeas-Petrovic edge preservation: Sobel gradients (zero-padded 'same' convolution),
         strength and orientation preservation through sigmoids (Tg 0.9994, kg -15, Dg 0.5,
         Ta 0.9879, ka -22, Da 0.8), weighted by the source gradient strengths.
SSIM     SSIM(F, A) + SSIM(F, B), scikit-image 0.19 ``structural_similarity`` with its
         defaults on float input: 7x7 uniform window, sample covariance (49/48), K1 0.01,
         K2 0.03, mean over the window-valid interior; data range 2 (``reference``, what
         scikit-image assumes for float images) or 255 (``textbook``).
MSE      (mean((A - F)^2) + mean((B - F)^2)) / 2.
CC       (corr(A, F) + corr(B, F)) / 2, Pearson correlation.
PSNR     10 log10(max(F)^2 / MSE) -- the peak is the fused image's maximum, not 255.
=======  ======================================================================================

Degenerate inputs give finite values, without warnings (the reference divides by zero):
a correlation with a constant image (CC, SCD terms) is 0; VIF of a constant source is 1 for
that source (the reference's NaN rule); Qabf is 0 when neither source has any gradient; PSNR
is 100 dB when MSE is 0 and uses a peak of 1 when F is all zero; MI against a constant image
is 0. Pixel values outside 0..255 are clipped for EN only (the reference would wrap them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Dict

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

#: All metric names, in the order of the reference evaluator.
METRIC_NAMES = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "MSE", "CC", "PSNR")
#: Column order of the papers' tables (DDFM Table 1 first), then the rest.
TABLE_COLUMNS = ("EN", "SD", "MI", "VIF", "Qabf", "SSIM", "SF", "AG", "SCD", "CC", "PSNR", "MSE")

PSNR_CAP_DB = 100.0  # returned when MSE == 0

_F32 = np.float32


@dataclass(frozen=True)
class Profile:
    """A named set of metric conventions."""
    name: str
    ssim_data_range: float
    mi_log_base: float
    description: str


PROFILES: Dict[str, Profile] = {
    "reference": Profile(
        "reference", 2.0, math.e,
        "CDDFuse utils/Evaluator.py as the DDFM/CDDFuse papers used it: SSIM with scikit-image's "
        "float data range of 2, MI in nats"),
    "textbook": Profile(
        "textbook", 255.0, 2.0,
        "SSIM with the data range of 8-bit images (255), MI in bits; everything else unchanged"),
}


def get_profile(profile: str | Profile) -> Profile:
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown metric profile {profile!r}; choose one of "
                         f"{', '.join(PROFILES)}") from None


# --------------------------------------------------------------------------------------------
# input handling


def _as_image(img, name: str = "image", min_size: int = 1) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D grey image, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected a numeric image, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=_F32)
    if min(arr.shape) < min_size:
        raise ValueError(f"{name}: image {arr.shape} is smaller than {min_size}x{min_size}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: image holds NaN or infinite values")
    return arr


def _as_triple(fused, a, b, min_size: int = 1):
    f = _as_image(fused, "fused", min_size)
    a = _as_image(a, "source A", min_size)
    b = _as_image(b, "source B", min_size)
    if not (f.shape == a.shape == b.shape):
        raise ValueError(f"shape mismatch: fused {f.shape}, sources {a.shape} and {b.shape}")
    return f, a, b


# --------------------------------------------------------------------------------------------
# float32 reductions exactly as the reference's numpy (1.24) performs them
#
# The reference computes SD, SF, AG, MSE, CC, SCD and Qabf on float32 images with float32
# sums. numpy 1.24 sums a contiguous float32 array in buffered chunks of 8192 elements, each
# chunk by pairwise summation (blocks of at most 128 elements added with 8 interleaved
# accumulators), the chunk sums added one after another to 0; ``mean`` then divides the float32
# sum by the count in float64 and rounds back to float32. Newer numpy versions chunk
# differently, which moves these metrics by a few float32 ulps (~3e-7 relative); the helpers
# below reproduce the reference's rounding exactly, vectorised.

_BUFSIZE = 8192   # numpy's default ufunc buffer size: the reduction's chunk length
_PW_BLOCK = 128   # numpy's pairwise-summation leaf size
_LEAF = 16 * 8 + 7  # a leaf laid out as 16 groups of 8 plus a tail of up to 7


def _leaf_sums(leaves: np.ndarray) -> np.ndarray:
    """numpy's pairwise-sum leaf on rows of ``(k, 128)`` or ``(k, 135)`` float32: eight accumulators over the
    16 groups of 8, combined as ((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7)), then the tail added in
    order. Zero padding leaves every partial sum unchanged."""
    groups = leaves[:, :128].reshape(-1, 16, 8)
    r = groups[:, 0].copy()
    for k in range(1, 16):
        r += groups[:, k]
    res = ((r[:, 0] + r[:, 1]) + (r[:, 2] + r[:, 3])) + ((r[:, 4] + r[:, 5]) + (r[:, 6] + r[:, 7]))
    for k in range(128, leaves.shape[1]):
        res += leaves[:, k]
    return res


def _pairwise_plan(n: int, start: int, leaves: list) -> object:
    """Recursion tree of numpy's pairwise_sum over ``n`` elements from ``start``: a leaf index
    or a pair of subtrees; leaves are appended to ``leaves`` as (start, n)."""
    if n <= _PW_BLOCK:
        leaves.append((start, n))
        return len(leaves) - 1
    n2 = n // 2
    n2 -= n2 % 8
    return (_pairwise_plan(n2, start, leaves), _pairwise_plan(n - n2, start + n2, leaves))


_REM_CACHE: dict = {}


def _remainder_plan(n: int):
    """Gather indices (into the remainder, ``n`` meaning a zero) laying out each leaf as
    :func:`_leaf_sums` expects, and the tree combining the leaves; cached per length."""
    plan = _REM_CACHE.get(n)
    if plan is None:
        leaves: list = []
        tree = _pairwise_plan(n, 0, leaves)
        idx = np.full((len(leaves), _LEAF), n, dtype=np.intp)
        for i, (s, m) in enumerate(leaves):
            if m < 8:  # numpy adds such short runs one by one onto 0: use the tail slots
                idx[i, 128:128 + m] = np.arange(s, s + m)
            else:
                body = m - m % 8
                idx[i, :body] = np.arange(s, s + body)
                idx[i, 128:128 + m - body] = np.arange(s + body, s + m)
        plan = _REM_CACHE[n] = (idx, tree)
    return plan


def _eval_tree(tree, sums) -> np.float32:
    if isinstance(tree, tuple):
        return _eval_tree(tree[0], sums) + _eval_tree(tree[1], sums)
    return sums[tree]


def _sum32(x: np.ndarray) -> np.float32:
    """Sum of a float32 array, rounded exactly as numpy 1.24's ``np.sum`` rounds it."""
    a = np.ascontiguousarray(x, dtype=_F32).ravel()
    n = a.size
    nfull = n // _BUFSIZE
    total = _F32(0.0)
    if nfull:
        leaves = a[:nfull * _BUFSIZE].reshape(nfull * (_BUFSIZE // _PW_BLOCK), _PW_BLOCK)
        s = _leaf_sums(leaves)
        s = s.reshape(nfull, _BUFSIZE // _PW_BLOCK)
        while s.shape[1] > 1:  # a full chunk's tree is balanced
            s = s[:, 0::2] + s[:, 1::2]
        for c in s[:, 0]:
            total = total + c
    rem = n - nfull * _BUFSIZE
    if rem:
        idx, tree = _remainder_plan(rem)
        tail = np.append(a[nfull * _BUFSIZE:], _F32(0.0))
        total = total + _eval_tree(tree, _leaf_sums(tail[idx]))
    return _F32(total)


def _mean32(x: np.ndarray) -> np.float32:
    """``np.mean`` of a float32 array as numpy 1.24 rounds it (float32 sum, float64 division,
    float32 result)."""
    return _F32(float(_sum32(x)) / x.size)


def _std32(x: np.ndarray) -> np.float32:
    """``np.std`` of a float32 array as numpy 1.24 rounds it."""
    mean = _sum32(x) / _F32(x.size)  # float32 division inside np.var
    d = x - mean
    return np.sqrt(_F32(float(_sum32(d * d)) / x.size))


# --------------------------------------------------------------------------------------------
# single-image metrics (float32 arithmetic where the reference uses it)


def _en(f: np.ndarray) -> float:
    q = np.rint(np.clip(f, 0, 255)).astype(np.uint8).ravel()
    p = np.bincount(q, minlength=256) / q.size
    p = p[p > 0]
    return 0.0 - float(np.sum(p * np.log2(p)))  # 0.0 - x: a constant image gives 0.0, not -0.0


def _sd(f: np.ndarray) -> float:
    return float(_std32(f))


def _sf(f: np.ndarray) -> float:
    dx = f[:, 1:] - f[:, :-1]
    dy = f[1:, :] - f[:-1, :]
    return float(np.sqrt(_mean32(dx * dx) + _mean32(dy * dy)))


def _ag(f: np.ndarray) -> float:
    gx = np.empty_like(f)
    gy = np.empty_like(f)
    gx[:, 0] = f[:, 1] - f[:, 0]
    gx[:, -1] = f[:, -1] - f[:, -2]
    gx[:, 1:-1] = (f[:, 2:] - f[:, :-2]) / _F32(2)
    gy[0, :] = f[1, :] - f[0, :]
    gy[-1, :] = f[-1, :] - f[-2, :]
    gy[1:-1, :] = (f[2:, :] - f[:-2, :]) / _F32(2)
    return float(_mean32(np.sqrt((gx * gx + gy * gy) / _F32(2))))


def entropy(img) -> float:
    """EN: Shannon entropy (bits) of the uint8-rounded image's histogram."""
    return _en(_as_image(img))


def standard_deviation(img) -> float:
    """SD: population standard deviation."""
    return _sd(_as_image(img))


def spatial_frequency(img) -> float:
    """SF: sqrt(RF^2 + CF^2) from first differences."""
    return _sf(_as_image(img, min_size=2))


def average_gradient(img) -> float:
    """AG: mean of sqrt((Gx^2 + Gy^2) / 2) with numpy-style gradients."""
    return _ag(_as_image(img, min_size=2))


# --------------------------------------------------------------------------------------------
# correlation-type metrics


def _centred(x: np.ndarray) -> tuple[np.ndarray, np.float32]:
    d = x - _mean32(x)
    return d, _sum32(d * d)


def _corr(dx, sxx, dy, syy) -> np.float32:
    """Pearson correlation from centred float32 arrays, in float32 like the reference;
    0 when either image is constant."""
    den = np.sqrt(sxx * syy)
    if not den > 0:
        return _F32(0.0)
    return _sum32(dx * dy) / den


def _mse_pair(x: np.ndarray, y: np.ndarray) -> np.float32:
    d = x - y
    return _mean32(d * d)


def _mse(f, a, b) -> float:
    # float32 sum of the two means (rounded), then an exact halving, as the reference.
    return float(_mse_pair(a, f) + _mse_pair(b, f)) / 2.0


def _psnr(f, mse: float) -> float:
    if mse <= 0.0:
        return PSNR_CAP_DB
    peak = float(np.max(f))
    if peak <= 0.0:
        peak = 1.0
    return 10.0 * math.log10(peak * peak / mse)


def mse(fused, a, b) -> float:
    """MSE: mean of the two sources' mean squared errors."""
    return _mse(*_as_triple(fused, a, b))


def psnr(fused, a, b) -> float:
    """PSNR: 10 log10(max(F)^2 / MSE)."""
    f, a, b = _as_triple(fused, a, b)
    return _psnr(f, _mse(f, a, b))


def cc(fused, a, b) -> float:
    """CC: mean of the Pearson correlations of F with A and with B."""
    f, a, b = _as_triple(fused, a, b)
    df, sff = _centred(f)
    da, saa = _centred(a)
    db, sbb = _centred(b)
    return float(_corr(da, saa, df, sff) + _corr(db, sbb, df, sff)) / 2.0


def scd(fused, a, b) -> float:
    """SCD: corr(A, F - B) + corr(B, F - A)."""
    f, a, b = _as_triple(fused, a, b)
    return _scd(f, a, b)


def _scd(f, a, b) -> float:
    da, saa = _centred(a)
    db, sbb = _centred(b)
    dfb, sfb = _centred(f - b)
    dfa, sfa = _centred(f - a)
    return float(_corr(da, saa, dfb, sfb) + _corr(db, sbb, dfa, sfa))


# --------------------------------------------------------------------------------------------
# mutual information


def _labels(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense integer labels, one per distinct value, and their count."""
    lo, hi = float(x.min()), float(x.max())
    if hi - lo < 4096 and np.array_equal(x, np.rint(x)):
        lab = (x - _F32(lo)).astype(np.intp).ravel()
        return lab, int(hi - lo) + 1
    values, inverse = np.unique(x.ravel(), return_inverse=True)
    return inverse.ravel().astype(np.intp), values.size


def _mi_pair(x: np.ndarray, y: np.ndarray, base: float = math.e) -> float:
    """Mutual information of two images, each distinct value its own bin (scikit-learn's
    ``mutual_info_score`` on the flattened images), in units of log ``base``."""
    lx, nx = _labels(x)
    ly, ny = _labels(y)
    if nx == 1 or ny == 1:  # a constant image shares no information (scikit-learn's rule)
        return 0.0
    n = lx.size
    px = np.bincount(lx, minlength=nx)
    py = np.bincount(ly, minlength=ny)
    pair = lx * ny + ly
    if nx * ny <= 1 << 22:
        joint = np.bincount(pair, minlength=nx * ny)
        nz = np.flatnonzero(joint)
        nij = joint[nz].astype(np.float64)
    else:  # many distinct values: count only the pairs that occur
        nz, counts = np.unique(pair, return_counts=True)
        nij = counts.astype(np.float64)
    outer = px[nz // ny].astype(np.float64) * py[nz % ny].astype(np.float64)
    mi = float(np.sum(nij / n * (np.log(nij) + math.log(n) - np.log(outer))))
    mi = max(mi, 0.0)
    return mi / math.log(base)


def mutual_information(fused, a, b, base: float = math.e) -> float:
    """MI: MI(F, A) + MI(F, B); nats by default (the reference), pass ``base=2`` for bits."""
    f, a, b = _as_triple(fused, a, b)
    return _mi_pair(f, a, base) + _mi_pair(f, b, base)


# --------------------------------------------------------------------------------------------
# Qabf


def _sobel(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient strength and orientation as the reference's zero-padded 'same' convolutions
    with the Sobel kernels (x: left minus right, y: lower minus upper row)."""
    p = np.pad(img, 1)
    v = p[:-2] + _F32(2) * p[1:-1] + p[2:]           # [1 2 1] down the rows
    sx = v[:, :-2] - v[:, 2:]
    h = p[:, :-2] + _F32(2) * p[:, 1:-1] + p[:, 2:]  # [1 2 1] along the columns
    sy = h[2:] - h[:-2]
    g = np.sqrt(sx * sx + sy * sy)
    ratio = np.zeros_like(img)
    nonzero = sx != 0
    np.divide(sy, sx, out=ratio, where=nonzero)
    ang = np.where(nonzero, np.arctan(ratio), _F32(math.pi / 2))
    return g, ang


def _qabf_q(g_s, a_s, g_f, a_f) -> np.ndarray:
    """Per-pixel edge preservation Q^{SF} (float32), with the reference's rules: strength
    ratio min/max, but g_F itself where the two strengths are equal."""
    gaf = np.where(g_s == g_f, g_f, np.zeros_like(g_f))
    np.divide(g_f, g_s, out=gaf, where=g_s > g_f)
    np.divide(g_s, g_f, out=gaf, where=g_s < g_f)
    aaf = _F32(1) - np.abs(a_s - a_f) / _F32(math.pi / 2)
    qg = _F32(0.9994) / (_F32(1) + np.exp(_F32(-15) * (gaf - _F32(0.5))))
    qa = _F32(0.9879) / (_F32(1) + np.exp(_F32(-22) * (aaf - _F32(0.8))))
    return qg * qa


def _qabf(sob_f, sob_a, sob_b) -> float:
    g_f, a_f = sob_f
    g_a, a_a = sob_a
    g_b, a_b = sob_b
    q_a = _qabf_q(g_a, a_a, g_f, a_f)
    q_b = _qabf_q(g_b, a_b, g_f, a_f)
    den = _sum32(g_a + g_b)
    if not den > 0:
        return 0.0
    return float(_sum32(q_a * g_a + q_b * g_b) / den)


def qabf(fused, a, b) -> float:
    """Qabf: Xydeas-Petrovic gradient-based edge preservation."""
    f, a, b = _as_triple(fused, a, b)
    return _qabf(_sobel(f), _sobel(a), _sobel(b))


# --------------------------------------------------------------------------------------------
# SSIM (scikit-image 0.19 on float32 input)

_SSIM_WIN = 7


def _box_valid(x: np.ndarray) -> np.ndarray:
    """7x7 box mean over the window-valid interior, rounded to float32 after each axis.

    scipy's ``uniform_filter`` on a float32 image keeps a double running sum, divides it by 7,
    and stores float32 after each axis; on 0..255 images (and their products) every such sum is
    exact in double, so plain window sums in float64 give the same float32 values.
    """
    w = _SSIM_WIN
    x = x.astype(np.float64)
    h = x.shape[0] - w + 1
    s = x[0:h].copy()
    for k in range(1, w):
        s += x[k:k + h]
    t = (s / w).astype(_F32).astype(np.float64)
    n = t.shape[1] - w + 1
    s = t[:, 0:n].copy()
    for k in range(1, w):
        s += t[:, k:k + n]
    return (s / w).astype(_F32)


def _ssim_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _box_valid(x), _box_valid(x * x)


def _ssim_pair(x, y, data_range: float, stats_x=None) -> float:
    """scikit-image 0.19 ``structural_similarity(x, y, data_range=...)`` on float32 images."""
    ux, uxx = stats_x if stats_x is not None else _ssim_stats(x)
    uy, uyy = _ssim_stats(y)
    uxy = _box_valid(x * y)
    cov_norm = _F32(_SSIM_WIN ** 2 / (_SSIM_WIN ** 2 - 1))
    c1 = _F32((0.01 * data_range) ** 2)
    c2 = _F32((0.03 * data_range) ** 2)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    a1 = _F32(2) * ux * uy + c1
    a2 = _F32(2) * vxy + c2
    b1 = ux * ux + uy * uy + c1
    b2 = vx + vy + c2
    s = (a1 * a2) / (b1 * b2)
    return float(s.mean(dtype=np.float64))


def ssim(fused, a, b, data_range: float = 2.0) -> float:
    """SSIM: SSIM(F, A) + SSIM(F, B); ``data_range`` 2 is the reference's (scikit-image's
    default for float images), 255 the textbook one."""
    f, a, b = _as_triple(fused, a, b, min_size=_SSIM_WIN)
    sf = _ssim_stats(f)
    return _ssim_pair(f, a, data_range, sf) + _ssim_pair(f, b, data_range, sf)


# --------------------------------------------------------------------------------------------
# VIF (pixel domain, float64)

_VIF_SIGMA_NSQ = 2.0
_VIF_EPS = 1e-10
_VIF_MIN = 17  # the first scale's window


def _gauss_1d(n: int) -> np.ndarray:
    """1-D factor of the reference's normalised n x n Gaussian window (sd n/5). The 2-D window
    is the outer product of this with itself; its MATLAB-style cut-off (entries below
    eps * max) never applies at these sizes."""
    r = (n - 1) / 2.0
    x = np.arange(-r, r + 1)
    sd = n / 5.0
    g = np.exp(-(x * x) / (2.0 * sd * sd))
    return g / g.sum()


def _filt_direct(x: np.ndarray, n: int, step: int = 1) -> np.ndarray:
    """'valid' filtering with the separable n x n window, in the pixel domain, keeping every
    ``step``-th sample. Exact zeros stay exact zeros, as in the reference's convolutions."""
    g = _gauss_1d(n)
    r = n // 2
    y = ndimage.correlate1d(x, g, axis=1, mode="constant")[:, r:x.shape[1] - r:step]
    return ndimage.correlate1d(y, g, axis=0, mode="constant")[r:x.shape[0] - r:step]


class _FFTFilter:
    """The same 'valid' filtering by FFT, for one image shape and window size: with the window
    in the top-left corner of a zero-padded frame, the circular convolution equals the linear
    one wherever the window lies wholly inside the image, which is exactly the 'valid' part."""

    def __init__(self, shape, n: int):
        self.shape, self.n = shape, n
        self.fshape = (sfft.next_fast_len(shape[0], real=True),
                       sfft.next_fast_len(shape[1], real=True))
        key = (n, self.fshape)
        if key not in _KERNEL_SPECTRA:
            g = _gauss_1d(n)
            _KERNEL_SPECTRA[key] = sfft.rfft2(np.outer(g, g), s=self.fshape)
        self.kernel = _KERNEL_SPECTRA[key]
        self.buf = np.empty(self.kernel.shape, dtype=self.kernel.dtype)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        np.multiply(sfft.rfft2(x, s=self.fshape), self.kernel, out=self.buf)
        y = sfft.irfft2(self.buf, s=self.fshape, overwrite_x=True)
        return y[self.n - 1:self.shape[0], self.n - 1:self.shape[1]]


_KERNEL_SPECTRA: dict = {}


def _vif_scale_terms(s1, s2, s2_flat, s12):
    """Numerator and denominator sums of one scale (natural log; the reference's log10 cancels
    in the ratio), with the reference's rules: negative variances are 0 (``s2`` comes clipped,
    ``s2_flat`` = s2 < eps); where the reference's variance is below eps, or the distorted one
    is, or the gain g is negative, the gain is 0 (so the pixel adds nothing to the numerator);
    the residual variance is at least eps."""
    eps = _VIF_EPS
    np.maximum(s1, 0.0, out=s1)
    g = s1 + eps
    np.divide(s12, g, out=g)
    flat1 = s1 < eps
    zero = flat1 | s2_flat
    zero |= g < 0
    np.copyto(g, 0.0, where=zero)
    sv = g * s12
    np.subtract(s2, sv, out=sv)
    np.maximum(sv, eps, out=sv)
    sv += _VIF_SIGMA_NSQ
    np.copyto(s1, 0.0, where=flat1)
    t = g * g
    t *= s1
    t /= sv
    num = float(np.sum(np.log1p(t, out=t)))
    t = np.divide(s1, _VIF_SIGMA_NSQ, out=sv)
    den = float(np.sum(np.log1p(t, out=t)))
    return num, den


def _uint8_product(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x .* y of two uint8 images in MATLAB: the product saturates at 255."""
    return np.minimum(x * y, 255.0)


def _vif(f: np.ndarray, refs, uint8_products: bool = False) -> list:
    """VIF(ref -> f) for each reference image, float64 throughout.

    Scale 1 (integer-valued images, 17x17 window) is filtered by FFT on mean-centred images:
    there every local variance is either 0 or far above eps, so FFT rounding cannot matter.
    The coarser scales work on filtered images whose local variances can sit just above eps,
    where the gain s12 / s1 is ill-conditioned; they are filtered in the pixel domain, on the
    uncentred images, to round as the reference does.

    ``uint8_products``: vifp_mscale called on uint8 images (Tang's 2022 script), where the
    first scale's ref.*ref, dist.*dist and ref.*dist are uint8 products, saturating at 255
    (filter2 returns doubles, so the coarser scales are unaffected); that scale is then
    filtered in the pixel domain, uncentred, as the reference does."""
    f = f.astype(np.float64)
    refs = [r.astype(np.float64) for r in refs]
    num = [0.0] * len(refs)
    den = [0.0] * len(refs)
    for scale in range(1, 5):
        n = 2 ** (5 - scale) + 1
        if scale > 1:
            if min(f.shape) < n:
                break
            f = _filt_direct(f, n, 2)
            refs = [_filt_direct(r, n, 2) for r in refs]
        if min(f.shape) < n:
            break  # window larger than the image: this scale and the coarser ones add nothing
        if scale == 1 and not uint8_products:
            filt = _FFTFilter(f.shape, n)
            fc = f - f.mean()
            rcs = [r - r.mean() for r in refs]
        else:
            filt = partial(_filt_direct, n=n)
            fc, rcs = f, refs
        prod = _uint8_product if scale == 1 and uint8_products else np.multiply
        mu2 = filt(fc)
        s2 = filt(prod(fc, fc))
        s2 -= mu2 * mu2
        np.maximum(s2, 0.0, out=s2)
        s2_flat = s2 < _VIF_EPS
        for i, rc in enumerate(rcs):
            mu1 = filt(rc)
            s1 = filt(prod(rc, rc))
            s1 -= mu1 * mu1
            s12 = filt(prod(rc, fc))
            s12 -= mu1 * mu2
            nu, de = _vif_scale_terms(s1, s2, s2_flat, s12)
            num[i] += nu
            den[i] += de
    # A constant reference has no information (0 / 0): the reference returns 1 for it.
    return [nu / de if de > 0 else 1.0 for nu, de in zip(num, den)]


def vif(fused, a, b) -> float:
    """VIF: VIF(A -> F) + VIF(B -> F), pixel-domain, 4 scales (images at least 17x17; a coarse
    scale whose window does not fit is skipped)."""
    f, a, b = _as_triple(fused, a, b, min_size=_VIF_MIN)
    return float(sum(_vif(f, [a, b])))


# --------------------------------------------------------------------------------------------
# everything at once


def evaluate_pair(fused, ir, vis, profile: str | Profile = "reference") -> Dict[str, float]:
    """All twelve metrics of a fused image against its sources ``ir`` (the infrared role, A in
    the formulas) and ``vis`` (B), as a dict in :data:`METRIC_NAMES` order. Images are 2-D,
    0..255, at least 17x17 (VIF's first window), all of the same shape."""
    prof = get_profile(profile)
    f, a, b = _as_triple(fused, ir, vis, min_size=_VIF_MIN)
    out: Dict[str, float] = {}
    out["EN"] = _en(f)
    out["SD"] = _sd(f)
    out["SF"] = _sf(f)
    out["AG"] = _ag(f)
    out["MI"] = _mi_pair(f, a, prof.mi_log_base) + _mi_pair(f, b, prof.mi_log_base)
    out["SCD"] = _scd(f, a, b)
    out["VIF"] = float(sum(_vif(f, [a, b])))
    out["Qabf"] = _qabf(_sobel(f), _sobel(a), _sobel(b))
    sf = _ssim_stats(f)
    out["SSIM"] = (_ssim_pair(f, a, prof.ssim_data_range, sf)
                   + _ssim_pair(f, b, prof.ssim_data_range, sf))
    out["MSE"] = _mse(f, a, b)
    df, sff = _centred(f)
    da, saa = _centred(a)
    db, sbb = _centred(b)
    out["CC"] = float(_corr(da, saa, df, sff) + _corr(db, sbb, df, sff)) / 2.0
    out["PSNR"] = _psnr(f, out["MSE"])
    return out
