"""The metrics of the field's MATLAB toolkits (VIFB, MEFB, Liu's imageFusionMetrics, Tang's
evaluation), each written once.

Every function here works on one 2-D float64 channel (0..255 scale unless it says otherwise)
and reproduces one formula of a MATLAB reference, with that reference's arithmetic: where two
toolkits compute "the same" metric differently, the difference is a named argument (AG's
denominator, SF's normalisation, Qabf's input scale, the histogram binning of MI, Qcb's
im2double, whether Qc and Qy drop NaN windows, Piella's window weights and edge images, SD in
uint8 arithmetic), never a second copy. Where a reference's summation order decides ties on
non-integer data, its order is kept (``conv2_same_3x3`` for Qabf, ``sobel_window_sums`` for
Nabf): Tang's 2022 script ran them on im2double's 0..1 images. Which toolkit uses which
convention, and how colour images are handled, is ``metrics/toolkits.py``; the reference files
are listed in docs/metrics.md.

Degenerate inputs give the value the MATLAB reference gives (often NaN: 0/0), computed without
warnings. Nothing here validates its input; ``metrics/toolkits.py`` does that once per pair.

FMI and Qp's phase congruency have a second, compiled form (``metrics/compiled.py``, numba),
used when numba is installed unless ``DDFM_METRIC_KERNELS=numpy`` (``compiled_kernels``); the
NumPy forms here are the reference the compiled ones are tested against.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import math
import os

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

# --------------------------------------------------------------------------------------------
# shared building blocks


def _errstate():
    return np.errstate(divide="ignore", invalid="ignore", over="ignore")


#: The environment variable that picks FMI's and Qp's kernels: ``auto`` (the default: compiled
#: when numba is installed), ``numpy`` or ``compiled`` (an error without numba).
KERNELS_VARIABLE = "DDFM_METRIC_KERNELS"
KERNEL_CHOICES = ("auto", "numpy", "compiled")


@functools.lru_cache(maxsize=1)
def _import_compiled():
    """(metrics.compiled, None), or (None, why it cannot be imported)."""
    try:
        from metrics import compiled
    except ImportError as exc:  # numba missing, or installed for another numpy
        return None, str(exc)
    return compiled, None


def kernel_choice() -> str:
    """``DDFM_METRIC_KERNELS`` (unset or empty: auto), checked: a ValueError with one line for
    an unknown choice, or for ``compiled`` without a working numba."""
    choice = os.environ.get(KERNELS_VARIABLE) or "auto"
    if choice not in KERNEL_CHOICES:
        raise ValueError(f"{KERNELS_VARIABLE}={choice!r}: use one of {', '.join(KERNEL_CHOICES)}")
    if choice == "compiled" and _import_compiled()[0] is None:
        raise ValueError(f"{KERNELS_VARIABLE}=compiled needs numba ({_import_compiled()[1]}); "
                         "pip install numba, or unset it")
    return choice


def compiled_available() -> bool:
    """Whether numba can be imported, so that ``compiled`` is a valid choice."""
    return _import_compiled()[0] is not None


def compiled_kernels():
    """The compiled kernels module (``metrics/compiled.py``) when ``DDFM_METRIC_KERNELS`` asks
    for it and numba can be imported, else None (the NumPy forms)."""
    return None if kernel_choice() == "numpy" else _import_compiled()[0]


def warm_compiled_kernels() -> None:
    """Compile the compiled kernels now, or load numba's cache of them, so that a timing that
    follows leaves it out; nothing with the NumPy forms."""
    if compiled_kernels() is not None:
        fmi(*(np.full((8, 8), v) for v in (1.0, 2.0, 3.0)))
        phase_congruency(np.eye(8))


# A run of several profiles computes some metrics more than once on the same images (Qp in
# MEFB's and Liu's tables, the edge FMI in MEFB's and Tang's, ...): within ``shared_results``
# the functions marked ``@_shared`` remember their value by their arguments' contents.
_RESULTS: contextvars.ContextVar = contextvars.ContextVar("shared_results", default=None)


@contextlib.contextmanager
def shared_results():
    """Within this block, each ``@_shared`` metric is computed once per distinct input (equal
    array contents, equal other arguments) and its value reused: the same value bit for bit,
    as the same function computes it. Nested blocks share the outer one's results."""
    token = _RESULTS.set(_RESULTS.get() or {"values": {}, "digests": {}})
    try:
        yield
    finally:
        _RESULTS.reset(token)


def _fingerprint(arg, digests: dict):
    """An argument as a key: an array by its dtype, shape and a digest of its bytes (each array
    object hashed once per block; the object is kept, so its id is not reused), else itself."""
    if not isinstance(arg, np.ndarray):
        return arg
    known = digests.get(id(arg))
    if known is None:
        digest = hashlib.blake2b(np.ascontiguousarray(arg).view(np.uint8), digest_size=16).digest()
        known = digests[id(arg)] = (arg, (arg.dtype.str, arg.shape, digest))
    return known[1]


def _shared(fn):
    """Mark a metric whose value ``shared_results`` may reuse."""
    @functools.wraps(fn)
    def remembered(*args, **kwargs):
        store = _RESULTS.get()
        if store is None:
            return fn(*args, **kwargs)
        key = (fn.__name__, tuple(_fingerprint(a, store["digests"]) for a in args),
               tuple(sorted((k, _fingerprint(v, store["digests"])) for k, v in kwargs.items())))
        if key not in store["values"]:
            store["values"][key] = fn(*args, **kwargs)
        return store["values"][key]
    return remembered


def gaussian_1d(n: int, sigma: float) -> np.ndarray:
    """1-D factor of MATLAB's fspecial('gaussian', n, sigma), normalised (the 2-D window is the
    outer product; MATLAB's cut-off below eps * max never applies at the sizes used here)."""
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def filter_separable(img: np.ndarray, g: np.ndarray, shape: str = "same") -> np.ndarray:
    """MATLAB filter2(outer(g, g), img, shape) for a symmetric 1-D g: 'same' pads with zeros,
    'valid' keeps the positions where the window lies inside the image."""
    y = ndimage.correlate1d(img, g, axis=1, mode="constant")
    y = ndimage.correlate1d(y, g, axis=0, mode="constant")
    if shape == "valid":
        r = len(g) // 2
        y = y[r:img.shape[0] - r, r:img.shape[1] - r]
    return y


def sobel_xy(img: np.ndarray, mode: str = "constant", scale: float = 1.0):
    """(d/dx, d/dy) with the Sobel kernels as MATLAB correlates them: x = [-1 0 1; -2 0 2;
    -1 0 1], y = [-1 -2 -1; 0 0 0; 1 2 1]; ``mode`` 'constant' (zero padding, conv2/filter2
    'same'), 'nearest' (imfilter 'replicate') or 'mirror' (reflection without repeating the
    edge pixel)."""
    dx = ndimage.correlate1d(ndimage.correlate1d(img, [-1.0, 0.0, 1.0], axis=1, mode=mode),
                             [1.0, 2.0, 1.0], axis=0, mode=mode)
    dy = ndimage.correlate1d(ndimage.correlate1d(img, [-1.0, 0.0, 1.0], axis=0, mode=mode),
                             [1.0, 2.0, 1.0], axis=1, mode=mode)
    if scale != 1.0:
        dx, dy = dx * scale, dy * scale
    return dx, dy


def conv2_same_3x3(img: np.ndarray, kernel) -> np.ndarray:
    """MATLAB conv2(img, kernel, 'same') for a 3x3 kernel (zero padding, the kernel flipped),
    with conv2's rounding: one running sum over the kernel's non-zero taps in column-major
    order. On integer images any order gives the same result; on non-integer ones (0..1
    im2double data) the order decides which near-equal sums come out exactly equal."""
    k = np.asarray(kernel, dtype=np.float64)
    p = np.pad(img.astype(np.float64), 1)
    rows, cols = img.shape
    out = np.zeros((rows, cols))
    for q in range(3):
        for r in range(3):
            if k[r, q]:
                out += k[r, q] * p[2 - r:2 - r + rows, 2 - q:2 - q + cols]
    return out


def sobel_window_sums(img: np.ndarray):
    """(gv, gh) of Tang's sobel_fn: per pixel sum(sum(X .* K)) of its mirror-extended 3x3
    window X (per_extn_im_fn) with K = [-1 0 1; -2 0 2; -1 0 1] / 8 and its transpose
    [-1 -2 -1; 0 0 0; 1 2 1] / 8, summed as MATLAB sums: each window column top to bottom,
    then the three column sums (the rounding that decides ties on non-integer images)."""
    p = np.pad(img, 1, mode="reflect")
    rows, cols = img.shape
    vtemp = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
    out = []
    for k in (vtemp, vtemp.T):
        total = None
        for q in range(3):  # adding the zero taps' exact zeros changes no sum: left out
            terms = [k[r, q] * p[r:r + rows, q:q + cols] for r in range(3) if k[r, q]]
            if not terms:
                continue
            col = terms[0]
            for term in terms[1:]:
                col += term
            total = col if total is None else total + col
        out.append(total)
    return out[0], out[1]


def freqspace(shape) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB freqspace(shape, 'meshgrid'): (u, v), u varying along columns, v along rows,
    both (k - floor(n/2)) * 2/n."""
    h, w = shape
    fx = (np.arange(w) - w // 2) * (2.0 / w)
    fy = (np.arange(h) - h // 2) * (2.0 / h)
    return np.meshgrid(fx, fy)


def filter_spectrum(img: np.ndarray, response: np.ndarray) -> np.ndarray:
    """real(ifft2(ifftshift(fftshift(fft2(img)) .* response))) for a response that is
    symmetric on the freqspace grid (radial): MATLAB returns the real result for such
    conjugate-symmetric spectra, computed here by real FFTs."""
    h, w = img.shape
    half = np.fft.ifftshift(response)[:, :w // 2 + 1]
    return sfft.irfft2(sfft.rfft2(img) * half, s=(h, w))


def block_reduce(x: np.ndarray, size: int, reduce: str) -> np.ndarray:
    """MATLAB blkproc(x, [size size], [0 0], fun) for fun = sum or mean2 of a block: x is
    padded with zeros to whole blocks, and a padded block's mean counts the zeros."""
    h, w = x.shape
    ph, pw = -h % size, -w % size
    xp = np.pad(x, ((0, ph), (0, pw))) if ph or pw else x
    blocks = xp.reshape(xp.shape[0] // size, size, xp.shape[1] // size, size)
    out = blocks.sum(axis=(1, 3))
    return out / (size * size) if reduce == "mean" else out


def normalize_255(x: np.ndarray) -> np.ndarray:
    """The toolkits' normalize1: round((x - min) / (max - min) * 255); an all-zero image is
    kept; any other constant image becomes NaN (0/0), as in MATLAB."""
    hi, lo = x.max(), x.min()
    if hi == 0 and lo == 0:
        return x
    with _errstate():
        return round_half_away((x - lo) / (hi - lo) * 255.0)


def round_half_away(x: np.ndarray) -> np.ndarray:
    """MATLAB's round and integer conversion: halves away from zero (numpy rounds to even)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def corr2(x: np.ndarray, y: np.ndarray, y_mean=None) -> float:
    """MATLAB corr2 (Pearson correlation of two images); ``y_mean`` replaces y's own mean in
    the cross term (Tang's CC centres its second source with the first source's mean). A
    constant image gives NaN (0/0), as in MATLAB."""
    xc = x - x.mean()
    yc = y - (y.mean() if y_mean is None else y_mean)
    yv = y - y.mean()
    with _errstate():
        return float(np.sum(xc * yc) / math.sqrt(float(np.sum(xc * xc)) * float(np.sum(yv * yv))))


# --------------------------------------------------------------------------------------------
# information: histograms


def _entropy_of_counts(counts: np.ndarray, log) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * log(p)))


def entropy(img: np.ndarray) -> float:
    """EN: Shannon entropy in bits of the 256-bin histogram of floor(img) (VIFB's Entropy,
    MATLAB's entropy() of a uint8 image)."""
    counts = np.bincount(np.floor(img).astype(np.int64).ravel(), minlength=256)
    return _entropy_of_counts(counts, np.log2)


def cross_entropy(src: np.ndarray, fused: np.ndarray) -> float:
    """VIFB's cross entropy of one source against the fused image: sum over the grey levels
    occupied in both of P_src log2(P_src / P_fused) (levels empty in either are skipped)."""
    n = src.size
    p1 = np.bincount(np.floor(src).astype(np.int64).ravel(), minlength=256) / n
    p2 = np.bincount(np.floor(fused).astype(np.int64).ravel(), minlength=256) / n
    both = (p1 != 0) & (p2 != 0)
    return float(np.sum(p1[both] * np.log2(p1[both] / p2[both])))


def _joint_information(ix: np.ndarray, iy: np.ndarray, log) -> tuple[float, float, float]:
    """(H(x), H(y), H(x, y)) of two integer label images 0..255."""
    joint = np.bincount((ix * 256 + iy).ravel(), minlength=256 * 256).astype(np.float64)
    hxy = _entropy_of_counts(joint, log)
    hx = _entropy_of_counts(np.bincount(ix.ravel(), minlength=256).astype(np.float64), log)
    hy = _entropy_of_counts(np.bincount(iy.ravel(), minlength=256).astype(np.float64), log)
    return hx, hy, hxy


def mutual_information_minmax(x: np.ndarray, y: np.ndarray) -> float:
    """VIFB's mutinf: each image stretched to 0..1 by its own min and max (a constant image
    becomes 0), quantised to 256 levels with int16 rounding; MI = H(x) + H(y) - H(x, y) in
    nats."""
    labels = []
    for img in (x, y):
        lo, hi = img.min(), img.max()
        z = (img - lo) / (hi - lo) if hi != lo else np.zeros_like(img)
        labels.append(round_half_away(z * 255.0).astype(np.int64))
    hx, hy, hxy = _joint_information(labels[0], labels[1], np.log)
    return hx + hy - hxy


def mutual_information_saturated(src: np.ndarray, fused: np.ndarray) -> float:
    """Tang's MI_evaluation term: H(src) + H(fused) - H(fused, src) in bits, where the joint
    histogram indexes uint8 + 1, which saturates: levels 254 and 255 share a bin there (but
    not in the marginal entropies)."""
    s = np.floor(src).astype(np.int64)
    f = np.floor(fused).astype(np.int64)
    _, _, hfs = _joint_information(np.minimum(f, 254), np.minimum(s, 254), np.log2)
    return entropy(src) + entropy(fused) - hfs


# --------------------------------------------------------------------------------------------
# intensity and gradient statistics of the fused image


def standard_deviation(f: np.ndarray, uint8: bool = False) -> float:
    """SD: population standard deviation, sqrt(sum((F - mean)^2) / (r c)). ``uint8``: F is a
    uint8 image and the arithmetic is MATLAB's uint8 arithmetic, as SD_evaluation computes it
    when given the uint8 image (Tang's 2022 script): F - mean(F) is rounded and clipped to
    0..255 (every pixel below the mean counts 0), its square saturates at 255, and the sum is
    a double."""
    d = f - f.mean()
    if uint8:
        d = round_half_away(np.maximum(d, 0.0))
        return math.sqrt(float(np.sum(np.minimum(d * d, 255.0))) / f.size)
    return math.sqrt(float(np.sum(d * d)) / f.size)


def spatial_frequency(f: np.ndarray, normalise: str = "count") -> float:
    """SF = sqrt(RF^2 + CF^2) from squared first differences along rows and columns; each
    sum divided by its own count of differences ('count': Tang, mean of diff) or by r*c for
    both ('mn': VIFB)."""
    dh = np.diff(f, axis=1)
    dv = np.diff(f, axis=0)
    sh, sv = float(np.sum(dh * dh)), float(np.sum(dv * dv))
    if normalise == "mn":
        return math.sqrt(sh / f.size + sv / f.size)
    return math.sqrt(sh / max(dh.size, 1) + sv / max(dv.size, 1))


def average_gradient(f: np.ndarray, denominator: str = "(r-1)(c-1)") -> float:
    """AG = sum(sqrt((Gx^2 + Gy^2) / 2)) / denominator, Gx, Gy by MATLAB's gradient (central
    differences, one-sided at the borders); both MATLAB toolkits divide by (r-1)(c-1), the
    Python evaluators by r*c."""
    gy, gx = np.gradient(f)
    s = float(np.sum(np.sqrt((gx * gx + gy * gy) / 2.0)))
    r, c = f.shape
    return s / ((r - 1) * (c - 1) if denominator == "(r-1)(c-1)" else r * c)


def edge_intensity(f: np.ndarray) -> float:
    """EI: mean Sobel gradient magnitude, imfilter with 'replicate' borders (VIFB)."""
    gx, gy = sobel_xy(f, mode="nearest")
    return float(np.mean(np.sqrt(gx * gx + gy * gy)))


# --------------------------------------------------------------------------------------------
# differences from the sources


def vifb_rmse_term(src: np.ndarray, f: np.ndarray) -> float:
    """VIFB's 'mse' helper: sqrt(sum((src - F)^2)) / (m n) -- not a root mean square."""
    d = src - f
    return math.sqrt(float(np.sum(d * d))) / f.size


def mean_squared_error(src: np.ndarray, f: np.ndarray) -> float:
    d = src - f
    return float(np.sum(d * d)) / f.size


def psnr_from(mse_like: float, peak: float = 255.0) -> float:
    """20 log10(peak / sqrt(mse_like)); infinite when mse_like is 0, as in MATLAB."""
    if mse_like == 0:
        return math.inf
    return 20.0 * math.log10(peak / math.sqrt(mse_like))


# --------------------------------------------------------------------------------------------
# edge preservation


_QABF_H1 = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))
_QABF_H3 = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def _qabf_edges(img: np.ndarray, scale: float):
    """Sobel strength and orientation as analysis_Qabf / metricsQabf compute them: conv2
    'same' (zero padding, ``conv2_same_3x3``) with h3 (x) and h1 (y), orientation
    atan(Sy / Sx), pi/2 where Sx == 0."""
    img = img * scale if scale != 1.0 else img
    sx, sy = conv2_same_3x3(img, _QABF_H3), conv2_same_3x3(img, _QABF_H1)
    g = np.sqrt(sx * sx + sy * sy)
    with _errstate():
        a = np.where(sx == 0, math.pi / 2, np.arctan(sy / sx))
    return g, a


def _qabf_preservation(g_s, a_s, g_f, a_f) -> np.ndarray:
    """Q^{SF} per pixel: the strength ratio (g_F itself where the two strengths are equal, the
    references' quirk) and orientation agreement through the sigmoids (Tg 0.9994, kg -15,
    Dg 0.5, Ta 0.9879, ka -22, Da 0.8)."""
    with _errstate():
        ratio = np.where(g_s > g_f, g_f / g_s, np.where(g_s == g_f, g_f, g_s / g_f))
    agree = 1.0 - np.abs(a_s - a_f) / (math.pi / 2)
    q_g = 0.9994 / (1.0 + np.exp(-15.0 * (ratio - 0.5)))
    q_a = 0.9879 / (1.0 + np.exp(-22.0 * (agree - 0.8)))
    return q_g * q_a


def qabf(a: np.ndarray, b: np.ndarray, f: np.ndarray, scale: float = 1.0) -> float:
    """Qabf (Xydeas-Petrovic): gradient-strength-weighted edge preservation of both sources.
    ``scale`` multiplies the images first: VIFB's metricsQabf computes 255 * im2double of an
    image already in 0..255 (scale 255), which only matters through the equal-strength quirk.
    NaN when neither source has a gradient (0/0), as in MATLAB."""
    g_a, a_a = _qabf_edges(a, scale)
    g_b, a_b = _qabf_edges(b, scale)
    g_f, a_f = _qabf_edges(f, scale)
    q_af = _qabf_preservation(g_a, a_a, g_f, a_f)
    q_bf = _qabf_preservation(g_b, a_b, g_f, a_f)
    num = float(np.sum(q_af * g_a + q_bf * g_b))
    den = float(np.sum(g_a + g_b))
    return num / den if den != 0 else math.nan


def _nabf_edges(img: np.ndarray):
    gv, gh = sobel_window_sums(img)
    g = np.sqrt(gh * gh + gv * gv)
    with _errstate():
        a = np.where((gv == 0) & (gh == 0), 0.0, np.arctan(gv / gh))
    return g, a


def _nabf_preservation(g_s, a_s, g_f, a_f) -> np.ndarray:
    with _errstate():
        ratio = np.where((g_s == 0) | (g_f == 0), 0.0,
                         np.where(g_s > g_f, g_f / g_s, g_s / g_f))
    agree = np.abs(np.abs(a_s - a_f) - math.pi / 2) * 2.0 / math.pi
    q_g = 0.9999 / (1.0 + np.exp(-19.0 * (ratio - 0.5)))
    q_a = 0.9995 / (1.0 + np.exp(-22.0 * (agree - 0.5)))
    return np.sqrt(q_g * q_a)


def nabf(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Nabf (Kumar's modified fusion artifacts measure, analysis_nabf(f, I1, I2)): the
    weighted loss 1 - Q where the fused gradient exceeds both sources'; Sobel / 8 with mirrored
    borders (``sobel_window_sums``), weights g^1.5 where g >= 2, else 0.001. The first argument
    is the fused image. On im2double's 0..1 images (Tang's 2022 script) no g reaches 2 (at most
    sqrt(0.5)), so every weight is 0.001: Nabf is then the mean over all pixels of
    ((1 - Q_AF) + (1 - Q_BF)) / 2 where F's gradient exceeds both sources', unweighted."""
    g_a, a_a = _nabf_edges(a)
    g_b, a_b = _nabf_edges(b)
    g_f, a_f = _nabf_edges(f)
    q_af = _nabf_preservation(g_a, a_a, g_f, a_f)
    q_bf = _nabf_preservation(g_b, a_b, g_f, a_f)
    w_a = np.where(g_a >= 2.0, g_a ** 1.5, 0.001)
    w_b = np.where(g_b >= 2.0, g_b ** 1.5, 0.001)
    artefact = (g_f > g_a) & (g_f > g_b)
    loss = np.where(artefact, (1.0 - q_af) * w_a + (1.0 - q_bf) * w_b, 0.0)
    return float(np.sum(loss)) / float(np.sum(w_a + w_b))


# --------------------------------------------------------------------------------------------
# structural similarity


def ssim_gaussian(x: np.ndarray, y: np.ndarray, data_range: float = 255.0,
                  border: str = "valid") -> float:
    """SSIM with an 11x11 Gaussian window (sd 1.5), variances as E[x^2] - E[x]^2, K1 0.01,
    K2 0.03, mean of the map. ``border`` 'valid': VIFB's ssim (filter2 'valid', L = 255);
    'replicate': MATLAB's built-in ssim (imgaussfilt with replicated borders, same-size map),
    whose L is 1 for double input -- what Tang's script gets on its 0..255 doubles."""
    g = gaussian_1d(11, 1.5)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    if border == "valid":
        def filt(z):
            return filter_separable(z, g, "valid")
    else:
        def filt(z):
            return ndimage.correlate1d(ndimage.correlate1d(z, g, axis=1, mode="nearest"), g,
                                       axis=0, mode="nearest")
    return float(np.mean(_ssim_map(filt, x, y, c1, c2)[0]))


def _ssim_map(filt, x: np.ndarray, y: np.ndarray, c1: float, c2: float):
    """Wang's SSIM map under a local-mean filter ``filt``, with the local (sigma_x^2, sigma_y^2,
    sigma_xy), variances as E[x^2] - E[x]^2."""
    mx, my = filt(x), filt(y)
    mxx, myy, mxy = mx * mx, my * my, mx * my
    sxx = filt(x * x) - mxx
    syy = filt(y * y) - myy
    sxy = filt(x * y) - mxy
    with _errstate():
        ssim_map = ((2 * mxy + c1) * (2 * sxy + c2)) / ((mxx + myy + c1) * (sxx + syy + c2))
    return ssim_map, sxx, syy, sxy


# --------------------------------------------------------------------------------------------
# human-perception metrics (Chen-Blum Qcb, Chen-Varshney Qcv)


def _qcb_contrast(img: np.ndarray) -> np.ndarray:
    """|filter2(G2, img) / filter2(G4, img) - 1| with the toolkits' unnormalised 31x31
    Gaussians of sd 2 and 4 (1/(2 pi sd^2) factors), zero-padded 'same' filtering."""
    x = np.arange(-15, 16, dtype=np.float64)
    num = filter_separable(img, np.exp(-(x * x) / 8.0)) / (2 * math.pi * 4.0)
    den = filter_separable(img, np.exp(-(x * x) / 32.0)) / (2 * math.pi * 16.0)
    with _errstate():
        c = np.abs(num / den - 1.0)
        return c ** 3 / (c * c + 1e-4)


def qcb(a: np.ndarray, b: np.ndarray, f: np.ndarray, im2double: bool = False) -> float:
    """Qcb (Chen-Blum): each image normalised to 0..255, filtered by the CSF (f0 15.3870, f1
    1.3456, a 0.7622 on the freqspace grid scaled by size/30), local contrast ratios of
    Gaussians, preservation min(Cs/Cf, Cf/Cs) weighted by Cs^2 / (Ca^2 + Cb^2), mean over
    pixels. NaN where the reference divides 0 by 0 (a constant non-zero image).
    ``im2double``: the images are divided by 255 before normalize1 (MEFB's copy calls
    im2double on uint8 data; VIFB's on doubles, a no-op), which moves normalize1's rounding at
    exact halves."""
    if im2double:
        a, b, f = a / 255.0, b / 255.0, f / 255.0
    h, w = a.shape
    u, v = freqspace((h, w))
    r = np.sqrt((w / 30.0 * u) ** 2 + (h / 30.0 * v) ** 2)
    csf = np.exp(-(r / 15.3870) ** 2) - 0.7622 * np.exp(-(r / 1.3456) ** 2)
    ca, cb, cf = (_qcb_contrast(filter_spectrum(normalize_255(img), csf)) for img in (a, b, f))
    with _errstate():
        qa = np.where(ca < cf, (ca / cf) * 1.0 + (cf / ca) * 0.0, (ca / cf) * 0.0 + (cf / ca) * 1.0)
        qb = np.where(cb < cf, (cb / cf) * 1.0 + (cf / cb) * 0.0, (cb / cf) * 0.0 + (cf / cb) * 1.0)
        wa = (ca * ca) / (ca * ca + cb * cb)
        wb = (cb * cb) / (ca * ca + cb * cb)
        return float(np.mean(wa * qa + wb * qb))


@_shared
def qcv(a: np.ndarray, b: np.ndarray, f: np.ndarray, window: int = 16) -> float:
    """Qcv (Chen-Varshney, lower is better): 16x16 blocks weighted by the sum of the sources'
    Sobel magnitudes^5, each block's mean squared CSF-filtered difference (theta_m on the grid
    scaled by size/8; blocks padded with zeros count the zeros), ratio of the weighted sums."""
    a, b, f = normalize_255(a), normalize_255(b), normalize_255(f)
    h, w = a.shape
    u, v = freqspace((h, w))
    r = np.sqrt((w / 8.0 * u) ** 2 + (h / 8.0 * v) ** 2)
    theta_m = 2.6 * (0.0192 + 0.144 * r) * np.exp(-(0.144 * r) ** 1.1)
    num = den = 0.0
    with _errstate():
        for src in (a, b):
            gx, gy = sobel_xy(src)
            weight = block_reduce(np.sqrt(gx * gx + gy * gy) ** 5, window, "sum")
            diff = filter_spectrum(src - f, theta_m)
            num += float(np.sum(weight * block_reduce(diff * diff, window, "mean")))
            den += float(np.sum(weight))
        return num / den


# --------------------------------------------------------------------------------------------
# MEF-SSIM (Ma et al.), the multi-scale form Tang's script reports as MS_SSIM


def _local_mean(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    return filter_separable(x, g, "valid")


def _mef_ssim_level(seq, f: np.ndarray, c: float = (0.03 * 255) ** 2) -> float:
    """mef_ssim(imgSeq, fI) of one scale, vectorised: every per-window quantity of the
    reference's double loop (patch norms, the structure-consistency R, the weights, the
    rescaled desired patch and its Gaussian-weighted SSIM with the fused patch) written with
    local moments -- uniform 11x11 ones for the patch statistics, Gaussian (sd 1.5) ones for
    the SSIM terms."""
    shift = float(np.mean([s.mean() for s in seq]))  # centring only reduces rounding
    seq = [s - shift for s in seq]
    f = f - float(f.mean())
    u, g = np.full(11, 1.0 / 11), gaussian_1d(11, 1.5)
    mu = [_local_mean(s, u) for s in seq]
    ss = [np.maximum(121.0 * (_local_mean(s * s, u) - m * m), 0.0) for s, m in zip(seq, mu)]
    ed = [np.sqrt(v) + 0.001 for v in ss]
    total = seq[0] + seq[1]
    mt = _local_mean(total, u)
    num = np.sqrt(np.maximum(121.0 * (_local_mean(total * total, u) - mt * mt), 0.0))
    eps = np.finfo(np.float64).eps
    r = (num + eps) / (np.sqrt(ss[0]) + np.sqrt(ss[1]) + eps)
    r = np.clip(np.where(r > 1, 1 - eps, r), eps, None)
    p = np.minimum(np.tan(math.pi / 2 * r), 10.0)
    w = [(e / 11.0) ** p + eps for e in ed]
    coef = [wk / (w[0] + w[1]) / e for wk, e in zip(w, ed)]
    cov_u = _local_mean(seq[0] * seq[1], u) - mu[0] * mu[1]
    norm2 = 121.0 * (coef[0] ** 2 * ss[0] / 121.0 + coef[1] ** 2 * ss[1] / 121.0
                     + 2 * coef[0] * coef[1] * cov_u)
    norm = np.sqrt(np.maximum(norm2, 0.0))
    with _errstate():
        scale = np.where(norm > 0, np.maximum(ed[0], ed[1]) / norm, 1.0)
    gm = [_local_mean(s, g) for s in seq]
    gf = _local_mean(f, g)
    var_r = (coef[0] ** 2 * (_local_mean(seq[0] ** 2, g) - gm[0] ** 2)
             + coef[1] ** 2 * (_local_mean(seq[1] ** 2, g) - gm[1] ** 2)
             + 2 * coef[0] * coef[1] * (_local_mean(seq[0] * seq[1], g) - gm[0] * gm[1]))
    cov_rf = (coef[0] * (_local_mean(seq[0] * f, g) - gm[0] * gf)
              + coef[1] * (_local_mean(seq[1] * f, g) - gm[1] * gf))
    var_f = _local_mean(f * f, g) - gf * gf
    q = (2 * scale * cov_rf + c) / (scale * scale * var_r + var_f + c)
    return float(np.mean(q))


def _halve(x: np.ndarray) -> np.ndarray:
    """imfilter(x, ones(2)/4, 'symmetric', 'same') then x(1:2:end, 1:2:end): the mean of each
    pixel and its right, lower and lower-right neighbours (the last row/column repeated)."""
    xp = np.pad(x, ((0, 1), (0, 1)), mode="symmetric")
    avg = (xp[:-1, :-1] + xp[:-1, 1:] + xp[1:, :-1] + xp[1:, 1:]) / 4.0
    return avg[::2, ::2]


def mef_ssim(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """mef_ssim(imgSeq = [a, b], fI = f): Ma's MEF-SSIM at one scale (K = 0.03, 11x11
    Gaussian window of sd 1.5), the mean of the quality map over the 'valid' windows; what
    Tang's 2022 script reports as SSIM."""
    return _mef_ssim_level([a, b], f)


def mef_ssim_multiscale(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """analysis_ms_ssim(imgSeq = [a, b], fI = f): MEF-SSIM at 3 scales, weights 0.0448, 0.2856,
    0.3001 (normalised), combined as prod(Q^w); -inf when the coarsest scale is narrower than
    the 11x11 window, as the reference returns."""
    if min(a.shape) / 4.0 < 11:
        return -math.inf
    weights = np.array([0.0448, 0.2856, 0.3001])
    weights = weights / weights.sum()
    seq, q = [a, b], []
    for level in range(3):
        if level:
            seq, f = [_halve(s) for s in seq], _halve(f)
        q.append(_mef_ssim_level(seq, f))
    with _errstate():
        return float(np.prod(np.array(q) ** weights))


# --------------------------------------------------------------------------------------------
# FMI (Haghighat's feature mutual information, analysis_fmi.m), 3x3 windows


def _window_columns(feature: np.ndarray) -> np.ndarray:
    """Every 3x3 window of ``feature`` as a column, its rows in MATLAB's sub(:) order
    (column-major): shape (9, number of interior pixels), windows in row-major order."""
    rows, cols = feature.shape[0] - 2, feature.shape[1] - 2
    return np.stack([feature[dy:dy + rows, dx:dx + cols].ravel()
                     for dx in range(3) for dy in range(3)])


def _xlog2x(x: np.ndarray) -> np.ndarray:
    """x log2|x|, 0 where x is 0: the reference's real(-p log2 p) for the negative joint
    values a copula mixture can produce, skipping zeros."""
    size = np.abs(x)
    size[size == 0] = 1.0
    return x * np.log2(size, out=size)


class _FmiWindows:
    """One feature image's windows as the reference sees them: raw values, the pdf (min-max
    normalised, all ones when flat, divided by its sum), its cdf, entropy (bits) and the
    standard deviation of the pdf over the positions 1..9. All (9, N) or (N,)."""

    def __init__(self, feature: np.ndarray):
        self.raw = _window_columns(feature)
        lo, hi = self.raw.min(axis=0), self.raw.max(axis=0)
        flat = hi == lo
        with _errstate():
            sub = np.where(flat, 1.0, (self.raw - lo) / np.where(flat, 1.0, hi - lo))
        self.pdf = sub / sub.sum(axis=0)
        self.cdf = np.cumsum(self.pdf, axis=0)
        self.entropy = -np.sum(_xlog2x(self.pdf.copy()), axis=0)
        pos = np.arange(1, 10, dtype=np.float64)[:, None]
        self.sd = np.sqrt(np.maximum(np.sum(pos * pos * self.pdf, axis=0)
                                     - np.sum(pos * self.pdf, axis=0) ** 2, 0.0))
        self.centred = self.pdf - self.pdf.mean(axis=0)

    def columns(self, keep: np.ndarray) -> "_FmiWindows":
        """The same for the windows where ``keep`` is true."""
        part = object.__new__(_FmiWindows)
        for name, value in vars(self).items():
            setattr(part, name, value[..., keep])
        return part


def _monotone_path(cdf_x: np.ndarray, cdf_y: np.ndarray):
    """The comonotone coupling of two 9-bin pdfs given by their cdfs (the joint cdf
    min(X_i, Y_j), Frechet's upper bound): its mass lies on a path of at most 17 cells, one
    per interval between consecutive merged cdf breakpoints. Returns the cells' indices i, j
    and masses, (18, N) each: the interval ending at each X breakpoint, then at each Y one;
    intervals beyond the last cdf value of either get mass 0."""
    below_x = np.sum(cdf_y[None, :, :] < cdf_x[:, None, :], axis=1)  # Y breakpoints before X_i
    below_y = np.sum(cdf_x[None, :, :] <= cdf_y[:, None, :], axis=1)  # X breakpoints before Y_j
    pad_x = np.concatenate([np.zeros_like(cdf_x[:1]), cdf_x])  # X_{-1} = 0
    pad_y = np.concatenate([np.zeros_like(cdf_y[:1]), cdf_y])
    own = np.arange(9)[:, None]
    start_x = np.maximum(pad_x[:-1], np.take_along_axis(pad_y, below_x, axis=0))
    start_y = np.maximum(pad_y[:-1], np.take_along_axis(pad_x, below_y, axis=0))
    i = np.concatenate([np.broadcast_to(own, below_x.shape), below_y])
    j = np.concatenate([below_x, np.broadcast_to(own, below_y.shape)])
    mass = np.concatenate([cdf_x - start_x, cdf_y - start_y])
    inside = (i < 9) & (j < 9)
    return np.minimum(i, 8), np.minimum(j, 8), np.where(inside, mass, 0.0)


def _fmi_pair(src: _FmiWindows, fused: _FmiWindows) -> np.ndarray:
    """fmi of every window between a source and the fused feature; 1 where the two windows
    are equal (the reference's aSub == fSub), only the others computed."""
    differ = np.any(src.raw != fused.raw, axis=0)
    if differ.all():
        return _fmi_windows(src, fused)
    values = np.ones(differ.shape)
    values[differ] = _fmi_windows(src.columns(differ), fused.columns(differ))
    return values


def _fmi_windows(src: _FmiWindows, fused: _FmiWindows) -> np.ndarray:
    """fmi of every window between a source and the fused feature: the joint pdf from the
    Frechet copula bound (upper for c >= 0, lower for c < 0) mixed with independence by the
    ratio of the pdfs' correlation c to the bound's, then 2 MI / (H_s + H_f).

    The reference sums over all 81 cells of the joint pdf; the bound's mass lies on at most
    17 of them (``_monotone_path``), and on the others the joint pdf is (1 - mix) p_f p_s,
    whose x log x sums in closed form, so only the path's cells are visited. The lower bound
    is the upper one with the source's bins reversed."""
    cross = np.sum(src.centred * fused.centred, axis=0)
    with _errstate():
        c = np.where(cross == 0, 0.0, cross / np.sqrt(np.sum(src.centred ** 2, axis=0)
                                                      * np.sum(fused.centred ** 2, axis=0)))
    neg = c < 0
    reversed_cdf = np.concatenate([1.0 - src.cdf[-2::-1], np.ones_like(src.cdf[:1])])
    i, j, mass = _monotone_path(fused.cdf, np.where(neg, reversed_cdf, src.cdf))
    j = np.where(neg, 8 - j, j)
    # sum_ij C(F_i, S_j) = sum over the cells of mass (9 - i)(9 - j), C the bound's joint cdf
    cov = np.sum(mass * (9 - i) * (9 - j), axis=0) - fused.cdf.sum(axis=0) * src.cdf.sum(axis=0)
    degenerate = (src.sd == 0) | (fused.sd == 0) | (c == 0)
    with _errstate():
        mix = np.where(degenerate, 0.0, c / (cov / (fused.sd * src.sd)))
    rest = 1.0 - mix
    indep = np.take_along_axis(fused.pdf, i, axis=0) * np.take_along_axis(src.pdf, j, axis=0) * rest
    on_path = np.sum(_xlog2x(mix * mass + indep) - _xlog2x(indep), axis=0)
    # sum over all cells of x log2|x| for x = rest p_f p_s: rest log2|rest| - rest (H_f + H_s)
    everywhere = _xlog2x(rest.copy()) - rest * (fused.entropy + src.entropy)
    mi = src.entropy + fused.entropy + everywhere + on_path
    with _errstate():
        return np.where(mi == 0, 0.0, 2.0 * mi / (src.entropy + fused.entropy))


def matlab_edge(img: np.ndarray) -> np.ndarray:
    """MATLAB's edge(img) with its defaults (Sobel, automatic threshold, thinning), as 0/1
    doubles: gradients by imfilter with fspecial('sobel')/8 and replicated borders, b = gx^2 +
    gy^2, cutoff 4 mean(b); a pixel is an edge where b > cutoff and b is a local maximum across
    the dominant gradient direction: (|gx| >= |gy| - 100 eps, b(r, c-1) <= b < ... > b(r, c+1))
    or the same vertically, neighbours outside the image counting as smaller. Written from the
    algorithm of MATLAB's code-generation edge.m (computeEdgesWithThinning); Octave's edge
    thins differently and is not a reference for it."""
    gx, gy = sobel_xy(img, mode="nearest", scale=1.0 / 8.0)
    b = gx * gx + gy * gy
    cutoff = 4.0 * np.sum(b) / b.size
    padded = np.pad(b, 1, constant_values=-np.inf)
    left, right = padded[1:-1, :-2], padded[1:-1, 2:]
    up, down = padded[:-2, 1:-1], padded[2:, 1:-1]
    ax, ay = np.abs(gx), np.abs(gy)
    tol = 100 * np.finfo(np.float64).eps
    across_x = (ax >= ay - tol) & (left <= b) & (b > right)
    across_y = (ay >= ax - tol) & (up <= b) & (b > down)
    return ((b > cutoff) & (across_x | across_y)).astype(np.float64)


def _rerange(x: np.ndarray) -> np.ndarray:
    """analysis_fmi.m's rerange: min-max to 0..1, all ones when flat."""
    lo, hi = x.min(), x.max()
    return np.ones_like(x) if hi == lo else (x - lo) / (hi - lo)


def dmey_feature(img: np.ndarray) -> np.ndarray:
    """analysis_fmi.m's 'wavelet' feature: one level of MATLAB's dwt2(img, 'dmey') (the
    Wavelet Toolbox's discrete Meyer filters, symmetric half-point extension, the default
    dwtmode 'sym'), assembled as [cA, cH; cV, cD] and reranged to 0..1. PyWavelets' dwt2 with
    mode 'symmetric' computes MATLAB's dwt2 (checked against a transcription of its steps in
    tests/test_toolkits.py)."""
    import pywt  # only this feature needs it

    approx, (horizontal, vertical, diagonal) = pywt.dwt2(img, "dmey", mode="symmetric")
    return _rerange(np.block([[approx, horizontal], [vertical, diagonal]]))


FMI_FEATURES = {
    "none": lambda x: x,
    "edge": matlab_edge,
    "dct": lambda x: sfft.dctn(x, type=2, norm="ortho"),  # MATLAB's dct2
    "wavelet": dmey_feature,
}


@_shared
def fmi(a: np.ndarray, b: np.ndarray, f: np.ndarray, feature: str = "edge",
        rows_per_chunk: int = 16) -> float:
    """analysis_fmi(a, b, f, feature) with its 3x3 windows: mean over the interior windows of
    the feature images of (fmi(a, f) + fmi(b, f)) / 2. ``feature`` (``FMI_FEATURES``): 'edge'
    (the reference's default: MATLAB's edge), 'none' (raw pixels), 'dct' (dct2 of the whole
    image) or 'wavelet' (dwt2 'dmey'). Compiled (``compiled_kernels``), or here in chunks of
    rows to bound memory."""
    if feature not in FMI_FEATURES:
        raise ValueError(f"FMI feature {feature!r}: use one of {', '.join(FMI_FEATURES)}")
    a, b, f = (np.ascontiguousarray(FMI_FEATURES[feature](x), dtype=np.float64) for x in (a, b, f))
    kernels = compiled_kernels()
    if kernels is not None:
        return float(kernels.fmi_window_mean(a, b, f))
    total, count = 0.0, 0
    for top in range(0, a.shape[0] - 2, rows_per_chunk):
        rows = slice(top, min(top + rows_per_chunk, a.shape[0] - 2) + 2)
        fused = _FmiWindows(f[rows])
        vals = (_fmi_pair(_FmiWindows(a[rows]), fused) + _fmi_pair(_FmiWindows(b[rows]), fused)) / 2.0
        total += float(np.sum(vals))
        count += vals.size
    return total / count


# --------------------------------------------------------------------------------------------
# information on normalize1'd images (MEFB's NMI, TE, Qncie; Hossny, Cvejic, Wang)


def _joint_pdf_normalised(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """h(i, j) = P(x = i, y = j) of two images after normalize1 (0..255 integers), as the
    toolkits' mutual_info / tsallis / NCC build it. A constant non-zero image is NaN after
    normalize1 and the reference stops with an index error: NaN here."""
    xi, yi = normalize_255(x), normalize_255(y)
    if not (np.isfinite(xi).all() and np.isfinite(yi).all()):
        return np.full((256, 256), np.nan)
    joint = np.bincount((xi.astype(np.int64) * 256 + yi.astype(np.int64)).ravel(),
                        minlength=256 * 256).astype(np.float64)
    return (joint / joint.sum()).reshape(256, 256)


def _entropy_bits(p: np.ndarray) -> float:
    """-sum(p log2(p + (p == 0))), the toolkits' zero-safe entropy."""
    return float(-np.sum(p * np.log2(p + (p == 0))))


def _pdf_entropies(h: np.ndarray) -> tuple[float, float, float]:
    """(H(x), H(y), H(x, y)) in bits of a joint pdf h(x, y)."""
    return _entropy_bits(h.sum(axis=1)), _entropy_bits(h.sum(axis=0)), _entropy_bits(h)


@_shared
def nmi(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """NMI (Hossny's normalised MI, MEFB's metricsNMI): 2 (MI(a, F) / (H(a) + H(F)) + MI(b, F)
    / (H(b) + H(F))), 256-bin histograms of the normalize1'd images, bits."""
    total = 0.0
    for src in (a, b):
        h = _joint_pdf_normalised(src, f)
        hx, hy, hxy = _pdf_entropies(h)
        total += (hx + hy - hxy) / (hx + hy)
    return 2.0 * total


def _tsallis_term(x: np.ndarray, y: np.ndarray, q: float) -> float:
    """The toolkits' tsallis(x, y, q): (1 - sum h(i, j)^q / (m(i) n(j))^(q-1)) / (1 - q) with the
    reference's marginals crossed: m(i) is P(y = i) and n(j) is P(x = j) while h(i, j) is
    P(x = i, y = j) (sum(h) and sum(h') of MATLAB indexed as if they were the other way round).
    Pairs with m(i) n(j) = 0 are skipped."""
    h = _joint_pdf_normalised(x, y)
    outer = np.outer(h.sum(axis=0), h.sum(axis=1))  # (i, j) -> P(y = i) P(x = j)
    keep = outer != 0
    with _errstate():
        return (1.0 - float(np.sum(h[keep] ** q / outer[keep] ** (q - 1.0)))) / (1.0 - q)


def tsallis_metric(a: np.ndarray, b: np.ndarray, f: np.ndarray, q: float = 1.85) -> float:
    """TE (Cvejic's Tsallis-entropy metric, q = 1.85): tsallis(a, F) + tsallis(b, F) on the
    normalize1'd images, with the crossed marginals of ``_tsallis_term`` (so values reach the
    hundreds)."""
    return _tsallis_term(a, f, q) + _tsallis_term(b, f, q)


@_shared
def qncie(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Qncie (Wang's nonlinear correlation information entropy): the 3x3 matrix of nonlinear
    correlation coefficients NCC = (H(x) + H(y) - H(x, y)) / 8 between a, b, F (256-bin
    histograms of the normalize1'd images), its eigenvalues r, 1 + sum(r / 3 log2(r / 3)) / 8."""
    ncc = []
    for x, y in ((a, b), (a, f), (b, f)):
        hx, hy, hxy = _pdf_entropies(_joint_pdf_normalised(x, y))
        ncc.append((hx + hy - hxy) / 8.0)
    if not np.isfinite(ncc).all():
        return math.nan
    r = np.linalg.eigvalsh(np.array([[1.0, ncc[0], ncc[1]], [ncc[0], 1.0, ncc[2]],
                                     [ncc[1], ncc[2], 1.0]]))
    with _errstate():
        hr = -float(np.sum(r * np.log2(r / 3.0) / 3.0)) / 8.0
    return 1.0 - hr


# --------------------------------------------------------------------------------------------
# SSIM-based fusion metrics (Cvejic's Qc, Yang's Qy, Piella's edge-weighted Qw)


def ssim_moments(x: np.ndarray, y: np.ndarray, window: int, sigma: float, c1: float,
                 c2: float):
    """Wang's SSIM map with a window x window Gaussian ('valid' filter2) and its local
    (sigma_x^2, sigma_y^2, sigma_xy)."""
    g = gaussian_1d(window, sigma)
    return _ssim_map(lambda z: filter_separable(z, g, "valid"), x, y, c1, c2)


_YANG_C = 2e-16  # C1 = C2 of the 7x7 ssim_yang in Qc and Qy


def qc(a: np.ndarray, b: np.ndarray, f: np.ndarray, drop_nan: bool = True) -> float:
    """Qc (Cvejic): SSIM(a, F) and SSIM(b, F) maps (7x7 Gaussian, sd 1.5, C1 = C2 = 2e-16)
    mixed by s = sigma_aF / (sigma_aF + sigma_bF), set to 0 where s < 0 and 1 where s > 1,
    then the mean: of the non-NaN values (``drop_nan``, MEFB) or of all (Liu's metricCvejic,
    NaN if any window is 0/0)."""
    map_a, _, _, s_af = ssim_moments(a, f, 7, 1.5, _YANG_C, _YANG_C)
    map_b, _, _, s_bf = ssim_moments(b, f, 7, 1.5, _YANG_C, _YANG_C)
    with _errstate():
        s = s_af / (s_af + s_bf)
        sim = s * map_a + (1.0 - s) * map_b
    sim = np.where(s < 0, 0.0, np.where(s > 1, 1.0, sim))
    return _mean_of(sim, drop_nan)


def _mean_of(values: np.ndarray, drop_nan: bool) -> float:
    """mean2 of the values, or of the non-NaN ones (NaN when none is left)."""
    if drop_nan:
        values = values[~np.isnan(values)]
    return float(np.mean(values)) if values.size else math.nan


def qy(a: np.ndarray, b: np.ndarray, f: np.ndarray, drop_nan: bool = True) -> float:
    """Qy (Yang): where SSIM(a, b) >= 0.75 the variance-weighted mix lambda SSIM(a, F) + (1 -
    lambda) SSIM(b, F), lambda = sigma_a^2 / (sigma_a^2 + sigma_b^2), elsewhere max(SSIM(a, F),
    SSIM(b, F)) (NaN ignored, as MATLAB's max); 7x7 windows, C1 = C2 = 2e-16; the mean of the
    non-NaN values (``drop_nan``, MEFB) or of all (Liu's metricYang)."""
    map_ab, s_a, s_b, _ = ssim_moments(a, b, 7, 1.5, _YANG_C, _YANG_C)
    map_a = ssim_moments(a, f, 7, 1.5, _YANG_C, _YANG_C)[0]
    map_b = ssim_moments(b, f, 7, 1.5, _YANG_C, _YANG_C)[0]
    similar = map_ab >= 0.75
    with _errstate():
        lam = s_a / (s_a + s_b)
        q = (lam * map_a + (1.0 - lam) * map_b) * similar + np.fmax(map_a, map_b) * ~similar
    return _mean_of(q, drop_nan)


def _prewitt_magnitude(img: np.ndarray) -> np.ndarray:
    """sqrt(X^2 + Y^2), filter2 'same' with [1 0 -1] (x3 rows) and [1 1 1; 0 0 0; -1 -1 -1]."""
    gx = ndimage.correlate1d(ndimage.correlate1d(img, [1.0, 0.0, -1.0], axis=1, mode="constant"),
                             [1.0, 1.0, 1.0], axis=0, mode="constant")
    gy = ndimage.correlate1d(ndimage.correlate1d(img, [1.0, 0.0, -1.0], axis=0, mode="constant"),
                             [1.0, 1.0, 1.0], axis=1, mode="constant")
    return np.sqrt(gx * gx + gy * gy)


def piella(a: np.ndarray, b: np.ndarray, f: np.ndarray, weighting: str = "max-variance",
           on_edges: bool = True) -> float:
    """Piella's fusion quality index: lambda SSIM(a, F) + (1 - lambda) SSIM(b, F) per window,
    lambda = s_a / (s_a + s_b) from the local variances of a and b (both raised by 0.5 where
    both are 0); Wang's SSIM (11x11 Gaussian, L = 255, 'valid'). ``weighting`` 'none': the
    mean over windows (Liu's Qs, metricPeilla sw 1); 'max-variance': windows weighted by
    max(s_a, s_b) / its sum (Qw). ``on_edges``: computed on the Prewitt edge magnitudes of the
    images (MEFB's metricsQw, case 3 with alpha 1) instead of the images."""
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    if on_edges:
        a, b, f = _prewitt_magnitude(a), _prewitt_magnitude(b), _prewitt_magnitude(f)
    _, s_a, s_b, _ = ssim_moments(a, b, 11, 1.5, c1, c2)
    flat = (s_a + s_b) == 0
    s_a, s_b = s_a + 0.5 * flat, s_b + 0.5 * flat
    lam = s_a / (s_a + s_b)
    q = lam * ssim_moments(f, a, 11, 1.5, c1, c2)[0] + (1.0 - lam) * ssim_moments(f, b, 11, 1.5, c1, c2)[0]
    if weighting == "none":
        return float(np.mean(q))
    cw = np.maximum(s_a, s_b)
    return float(np.sum(cw / np.sum(cw) * q))


# --------------------------------------------------------------------------------------------
# VIFF (Han et al.'s visual information fidelity for fusion, MEFB's metricsVIF)


def _viff_scales(ref: np.ndarray, dist: np.ndarray, noise_var: float):
    """ComVidVindG: per scale 1..4 (Gaussian N = 2^(5-s) + 1, sd N / 5, 'valid', the image
    filtered and halved before scales 2..4) the VID and VIND maps and the gain g."""
    out = []
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        win = gaussian_1d(n, n / 5.0)
        if scale > 1:
            ref = filter_separable(ref, win, "valid")[::2, ::2]
            dist = filter_separable(dist, win, "valid")[::2, ::2]
        mu1, mu2 = filter_separable(ref, win, "valid"), filter_separable(dist, win, "valid")
        s1 = np.maximum(filter_separable(ref * ref, win, "valid") - mu1 * mu1, 0.0)
        s2 = np.maximum(filter_separable(dist * dist, win, "valid") - mu2 * mu2, 0.0)
        s12 = filter_separable(ref * dist, win, "valid") - mu1 * mu2
        g = s12 / (s1 + 1e-10)
        sv = s2 - g * s12
        low1 = s1 < 1e-10
        g[low1], sv[low1], s1[low1] = 0.0, s2[low1], 0.0
        low2 = s2 < 1e-10
        g[low2], sv[low2] = 0.0, 0.0
        neg = g < 0
        sv[neg], g[neg] = s2[neg], 0.0
        sv[sv <= 1e-10] = 1e-10
        out.append((np.log10(1 + g * g * s1 / (sv + noise_var)), np.log10(1 + s1 / noise_var), g))
    return out


def viff(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """VIFF: at each of 4 scales, per pixel the source with the smaller gain g supplies VID and
    VIND; F_s = sum(VID + 1e-7) / sum(VIND + 1e-7); VIFF = sum(F_s p_s), p = [1 0 0.15 1] / 2.15;
    noise variance 0.005 * 255^2. NaN when the coarsest scale leaves no window (a side under 41
    pixels): the reference's 0/0 on empty maps."""
    scales_a = _viff_scales(a, f, 0.005 * 255 * 255)
    scales_b = _viff_scales(b, f, 0.005 * 255 * 255)
    weights = np.array([1.0, 0.0, 0.15, 1.0]) / 2.15
    ratios = []
    for (vid_a, vind_a, g_a), (vid_b, vind_b, g_b) in zip(scales_a, scales_b):
        take_a = g_a < g_b
        vid = np.where(take_a, vid_a, vid_b)
        vind = np.where(take_a, vind_a, vind_b)
        with _errstate():  # an image too small for the coarsest scale: 0/0, NaN as in MATLAB
            ratios.append(np.float64(np.sum(vid + 1e-7)) / np.float64(np.sum(vind + 1e-7)))
    return float(np.sum(np.array(ratios) * weights))


# --------------------------------------------------------------------------------------------
# Liu's toolbox (zhengliu6699/imageFusionMetrics): the metrics no other toolkit has


def tsallis_nava(a: np.ndarray, b: np.ndarray, f: np.ndarray, q: float = 0.43137) -> float:
    """Qte (metricMI sw 3, Nava's q = 0.43137): (T(a, F) + T(b, F)) / (H_a^q + H_b^q + T(a,
    b)), T the toolkits' tsallis term (``_tsallis_term``, crossed marginals), H the marginal
    entropies (bits) of the normalize1'd sources."""
    h_a, h_b, _ = _pdf_entropies(_joint_pdf_normalised(a, b))
    with _errstate():
        return ((_tsallis_term(a, f, q) + _tsallis_term(b, f, q))
                / (h_a ** q + h_b ** q + _tsallis_term(a, b, q)))


def _xydeas_edges(img: np.ndarray):
    """Sobel (filter2 'same') strength and atan(Y / X) with X raised by 1e-5 where it is 0."""
    gx, gy = sobel_xy(img)
    g = np.sqrt(gx * gx + gy * gy)
    return g, np.arctan(gy / (gx + 1e-5 * (gx == 0)))


def xydeas_liu(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Qg (Liu's metricXydeas): per pixel (Q_aF g_a + Q_bF g_b) / (g_a + g_b), mean over pixels;
    Q = 1 / (1 + e^(-10 (G - 0.5))) * 1 / (1 + e^(-20 (A - 0.75))), G the strength ratio
    (smaller over larger), A = |(|alpha_s - alpha_F| - pi/2)| 2 / pi. Zero strengths are raised
    by 1e-5 where the reference does it, in its order (F's before the ratio of the first source,
    so the second source sees it raised)."""
    g_f, ang_f = _xydeas_edges(f)
    preserved, weights = [], []
    for src in (a, b):
        g_s, ang_s = _xydeas_edges(src)
        larger = g_s > g_f
        g_s = g_s + 1e-5 * (g_s == 0)
        up = g_f / g_s
        g_f = g_f + 1e-5 * (g_f == 0)
        ratio = np.where(larger, up, g_s / g_f)
        agree = np.abs(np.abs(ang_s - ang_f) - math.pi / 2) * 2.0 / math.pi
        preserved.append(1.0 / (1.0 + np.exp(-10.0 * (ratio - 0.5)))
                         / (1.0 + np.exp(-20.0 * (agree - 0.75))))
        weights.append(g_s)
    return float(np.mean((preserved[0] * weights[0] + preserved[1] * weights[1])
                         / (weights[0] + weights[1])))


def _directional_squares(img: np.ndarray) -> list:
    """The four first differences of metricZheng: along rows, columns, the main diagonal and
    the anti-diagonal (im(i, j) - im(i-1, j+1))."""
    return [img[:, :-1] - img[:, 1:], img[:-1, :] - img[1:, :], img[1:, 1:] - img[:-1, :-1],
            img[1:, :-1] - img[:-1, 1:]]


def spatial_frequency_ratio(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Qsf (Zheng's rSFe, Liu's metricZheng): (SF_F - SF_R) / SF_R with the four-direction SF
    (diagonals weighted by sqrt(2)/2, every sum divided by m n) and the reference SF_R built
    from the larger absolute difference of the two sources in each direction; -1 for a
    constant fused image, NaN when both sources are constant (0/0)."""
    wd = math.sqrt(2.0) / 2.0
    weights = (1.0, 1.0, wd, wd)
    n = f.size
    sf_f = math.sqrt(sum(w * float(np.sum(d * d)) / n
                         for w, d in zip(weights, _directional_squares(f))))
    sf_r2 = 0.0
    for w, d_a, d_b in zip(weights, _directional_squares(a), _directional_squares(b)):
        m = np.maximum(np.abs(d_a), np.abs(d_b))
        sf_r2 += w * float(np.sum(m * m)) / n
    sf_r = math.sqrt(sf_r2)
    with _errstate():
        return float(np.float64(sf_f - sf_r) / np.float64(sf_r))


_HAAR = 1.0 / math.sqrt(2.0)  # namedFilter('haar') = [1 1]' / sqrt(2)


def _haar_split(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """corrDn(x, filt, 'reflect1', step 2, start 2) along ``axis`` for buildWpyr's Haar filters:
    lowpass filt = [1 1]/sqrt(2) and its modulateFlip [-1 1]/sqrt(2), each output taking the
    pair of samples (2k-1, 2k) (1-based). The two-tap window never leaves the image, so the edge
    handling changes nothing; an odd last sample belongs to no pair and is dropped."""
    x = np.moveaxis(x, axis, -1)
    n = x.shape[-1] // 2 * 2
    first, second = np.moveaxis(x[..., 0:n:2], -1, axis), np.moveaxis(x[..., 1:n:2], -1, axis)
    return first * _HAAR + second * _HAAR, first * -_HAAR + second * _HAAR


def haar_wavelet_bands(img: np.ndarray, levels: int):
    """matlabPyrTools' buildWpyr(img, levels, 'haar') as a list of (lohi, hilo, hihi) per level,
    finest first (pyrBand's bands 3l-2, 3l-1, 3l), and the final lowpass band. The first split
    runs down the columns (MATLAB's first index): lohi is highpass down the columns and
    lowpass along the rows, hilo the reverse, hihi highpass both ways. Works on a stack of
    images (the last two axes are rows and columns)."""
    bands = []
    for _ in range(levels):
        lo, hi = _haar_split(img, -2)
        img, hilo = _haar_split(lo, -1)
        lohi, hihi = _haar_split(hi, -1)
        bands.append((lohi, hilo, hihi))
    return bands, img


def qm_pww(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Qm (Liu's metricPWW.m: Wang et al.'s multi-scale metric, ICSP 2008): a two-level Haar
    pyramid (``haar_wavelet_bands``) of each image; per level, with W_s = H_s^2 + V_s^2 + D_s^2
    and EP_s = sum over the three bands of exp(-|band_s - band_F|),
    Q = sum(EP_a W_a + EP_b W_b) / sum(W_a + W_b); Qm = Q_1^(2/3) Q_2^(1/3).

    Quirks of the reference: the bands are of the raw 0..255 values, so exp(-|d|) is already
    0.37 for a coefficient difference of one grey level, and EP sums three such terms without
    averaging them (Qm lies in 0..3, not 0..1). The reference asks for even sizes but does
    not check them: buildWpyr drops an odd last row or column at each level (also at level
    two, where a side of 70 leaves 35 coefficients), and so does this. Both sources constant
    give 0/0 = NaN."""
    bands, _ = haar_wavelet_bands(np.stack([a, b, f]), 2)
    q = []
    for level in bands:
        stack = np.stack(level)  # (band, image, rows, cols)
        w = np.sum(stack[:, :2] ** 2, axis=0)
        ep = np.sum(np.exp(-np.abs(stack[:, :2] - stack[:, 2:])), axis=0)
        with _errstate():
            q.append(np.sum(ep * w) / np.sum(w))
    with _errstate():
        return float(q[0] ** (2.0 / 3.0) * q[1] ** (1.0 / 3.0))


# --------------------------------------------------------------------------------------------
# Qp (Zhao's phase-congruency metric: Liu's metricZhao, MEFB's metricsQp) on Kovesi's
# phase congruency as myphasecong3.m computes it (4 scales, 6 orientations)

_PC_SCALES, _PC_ORIENTS, _PC_EPS = 4, 6, 1e-4


def _pc_grid(rows: int, cols: int):
    """myphasecong3's frequency grid, ifftshifted: radius (1 at the centre) and the sine and
    cosine of atan2(-y, x); odd sizes span -1/2..1/2 over (n - 1), even ones -1/2..1/2 - 1/n."""
    def axis(n):
        if n % 2:
            return np.arange(-(n - 1) / 2, (n - 1) / 2 + 1) / (n - 1)
        return np.arange(-n / 2, n / 2) / n
    x, y = np.meshgrid(axis(cols), axis(rows))
    radius = np.sqrt(x * x + y * y)
    radius[rows // 2, cols // 2] = 1.0
    theta = np.arctan2(-y, x)
    return np.fft.ifftshift(radius), np.sin(np.fft.ifftshift(theta)), np.cos(np.fft.ifftshift(theta))


def _pc_filters(rows: int, cols: int):
    """(log-Gabor radial filters of the 4 scales, angular spreads of the 6 orientations)."""
    radius, sin_t, cos_t = _pc_grid(rows, cols)
    lx = (np.arange(1, cols + 1)[None, :] - (cols // 2 + 1)) / cols
    ly = (np.arange(1, rows + 1)[:, None] - (rows // 2 + 1)) / rows
    lowpass = np.fft.fftshift(1.0 / (1.0 + (np.sqrt(lx * lx + ly * ly) / 0.45) ** 30))
    radial = []
    for s in range(_PC_SCALES):
        fo = 1.0 / (3.0 * 2.1 ** s)
        with _errstate():
            lg = np.exp(-(np.log(radius / fo)) ** 2 / (2 * math.log(0.55) ** 2)) * lowpass
        lg[0, 0] = 0.0
        radial.append(lg)
    theta_sigma = math.pi / _PC_ORIENTS / 1.2
    spread = []
    for o in range(_PC_ORIENTS):
        ang = o * math.pi / _PC_ORIENTS
        ds = sin_t * math.cos(ang) - cos_t * math.sin(ang)
        dc = cos_t * math.cos(ang) + sin_t * math.sin(ang)
        spread.append(np.exp(-np.arctan2(ds, dc) ** 2 / (2 * theta_sigma ** 2)))
    return radial, spread


@functools.lru_cache(maxsize=4)
def _pc_bank(rows: int, cols: int) -> tuple:
    """Per orientation, what does not depend on the image: its 4 filters (log-Gabor x angular
    spread; one (4, rows, cols) array) and the noise-model sums of myphasecong3 --
    sum(filter_1^2) and, over the filters' spatial forms real(ifft2(filter)) sqrt(rows cols),
    sum of A_s^2 and of A_i A_j (i < j)."""
    radial, spread = _pc_filters(rows, cols)
    bank = []
    for o in range(_PC_ORIENTS):
        filters = [lg * spread[o] for lg in radial]
        spatial = [np.real(sfft.ifft2(flt)) * math.sqrt(rows * cols) for flt in filters]
        sum_an2 = float(np.sum(sum(sp * sp for sp in spatial)))
        sum_aiaj = float(np.sum(sum(spatial[i] * spatial[j] for i in range(len(spatial))
                                    for j in range(i + 1, len(spatial)))))
        bank.append((np.stack(filters), float(np.sum(filters[0] ** 2)), sum_an2, sum_aiaj))
    return tuple(bank)


def _pc_noise_threshold(eo_first, em_n: float, sum_an2: float, sum_aiaj: float) -> float:
    """The orientation's noise threshold T from the median of the smallest scale's energy."""
    mean_e2n = -float(np.median(np.abs(eo_first) ** 2)) / math.log(0.5)
    noise_power = mean_e2n / em_n
    tau = math.sqrt((2 * noise_power * sum_an2 + 4 * noise_power * sum_aiaj) / 2)
    return (tau * math.sqrt(math.pi / 2) + 2.0 * math.sqrt((2 - math.pi / 2) * tau * tau)) / 1.7


def _pc_accumulate(eo, threshold: float, cos_a: float, sin_a: float, sums) -> None:
    """One orientation added to ``sums`` (total energy, total amplitude, cx^2, cy^2, cx cy;
    (5, H, W), in place), from ``eo``, its 4 scales' complex responses: its energy less the
    noise threshold, weighted by the filters' spread, and its PC = that / its amplitude. The
    reference's sum over the scales of E mean_E + O mean_O is (sum E) mean_E + (sum O) mean_O,
    taken so here (equal to rounding). ``metrics.compiled.pc_accumulate`` is the same per pixel."""
    amp = [np.abs(e) for e in eo]
    sum_an = sum(amp)
    sum_e, sum_o = sum(e.real for e in eo), sum(e.imag for e in eo)
    x_energy = np.hypot(sum_e, sum_o) + _PC_EPS
    mean_e, mean_o = sum_e / x_energy, sum_o / x_energy
    energy = sum_e * mean_e + sum_o * mean_o
    for e in eo:
        energy -= np.abs(e.real * mean_o - e.imag * mean_e)
    energy = np.maximum(energy - threshold, 0.0)
    width = sum_an / (np.maximum.reduce(amp) + _PC_EPS) / _PC_SCALES
    weighted = 1.0 / (1.0 + np.exp((0.5 - width) * 10.0)) * energy
    with _errstate():
        pc = weighted / sum_an
    cx, cy = pc * cos_a, pc * sin_a
    sums[0] += weighted
    sums[1] += sum_an
    sums[2] += cx * cx
    sums[3] += cy * cy
    sums[4] += cx * cy


def phase_congruency(img: np.ndarray):
    """myphasecong3(img): (phase congruency, M, m) -- the maximum and minimum moments of the
    orientations' PC covariance. Octave and numpy FFTs differ by rounding only."""
    image_fft = sfft.fft2(img)
    kernels = compiled_kernels()
    sums = np.zeros((5, *img.shape))
    for o, (filters, *noise_sums) in enumerate(_pc_bank(*img.shape)):
        eo = sfft.ifft2(image_fft * filters, axes=(-2, -1), overwrite_x=True)
        threshold = _pc_noise_threshold(eo[0], *noise_sums)
        ang = o * math.pi / _PC_ORIENTS
        if kernels is None:
            _pc_accumulate(eo, threshold, math.cos(ang), math.sin(ang), sums)
        else:
            kernels.pc_accumulate(eo, threshold, math.cos(ang), math.sin(ang), _PC_EPS,
                                  _PC_SCALES, sums)
    total_energy, total_an, cx2, cy2, cxy = sums
    cx2, cy2, cxy = cx2 / (_PC_ORIENTS / 2), cy2 / (_PC_ORIENTS / 2), cxy / _PC_ORIENTS
    denom = np.sqrt(cxy * cxy + (cx2 - cy2) ** 2) + _PC_EPS
    return total_energy / (total_an + _PC_EPS), (cy2 + cx2 + denom) / 2, (cy2 + cx2 - denom) / 2


def _pc_correlation(f1, f2, fmax, ff, masks) -> float:
    """correlation_coeffcient: the masked features' local correlation with the fused one
    (11x11 Gaussian, 'same' zero-padded filter2, C = 1e-4), the largest of the three per pixel
    (NaN ignored), summed over the pixels and divided by the count of the max mask. Outside
    its mask each of the three is mu_1 * 0 (the reference copies the first one's zeros), so a
    NaN first feature (a constant source's moments) leaves NaN where no mask holds."""
    g = gaussian_1d(11, 1.5)

    def filt(z):
        return filter_separable(z, g)
    mu_f = filt(ff)
    var_f = filt(ff * ff) - mu_f * mu_f
    best = outside = None
    for feat, mask in zip((f1, f2, fmax), masks):
        feat = mask * feat
        mu = filt(feat)
        outside = mu * 0.0 if outside is None else outside
        var = filt(feat * feat) - mu * mu
        cov = filt(feat * ff) - mu * mu_f
        with _errstate():
            r = np.where(mask, (cov + 1e-4) / (np.sqrt(np.abs(var * var_f)) + 1e-4), outside)
        best = r if best is None else np.fmax(best, r)
    with _errstate():
        return float(np.sum(best)) / float(np.sum(masks[2]))


@_shared
def qp(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Qp (Zhao): product over phase congruency, M and m of the masked correlation with the
    fused image's, each source's feature where its PC exceeds 0.1 and the larger-PC source's
    feature where that exceeds 0.1. NaN for a constant image (PC 0/0), as the references."""
    pa, pb, pf = phase_congruency(a), phase_congruency(b), phase_congruency(f)
    take_a = pa[0] > pb[0]
    pc_max = np.where(take_a, pa[0], pb[0])
    masks = (pa[0] > 0.1, pb[0] > 0.1, pc_max > 0.1)
    result = 1.0
    for k in range(3):
        feat_max = take_a * pa[k] + (~take_a) * pb[k]
        result *= _pc_correlation(pa[k], pb[k], feat_max, pf[k], masks)
    return result
