"""Profiles that reproduce the field's MATLAB toolkits: which metrics, in which order, with
which conventions, and how each toolkit reads and pairs colour images.

``vifb``  VIFB (Zhang et al., CVPRW 2020; github.com/xingchenzhang/VIFB), its 13 metrics as
          compute_metrics.m calls them: metricsX(visible, infrared, fused), colour images
          channel by channel.
``mefb``  MEFB (Zhang, Information Fusion 2021; github.com/xingchenzhang/MEFB), compute_metrics.m's
          metricsX(A, B, fused), colour images channel by channel.
``liu``   Liu's imageFusionMetrics (TPAMI 2012; github.com/zhengliu6699/imageFusionMetrics),
          fusionAssess(A, B, fused) on grey double images.
``tang``  Tang's evaluation (github.com/Linfeng-Tang/Evaluation-for-Image-Fusion,
          Evaluation/analysis_Reference.m @ 0e87153b, after the 2023 commits), used by the IVF
          papers since SeAFusion: images read as uint8 grey (rgb2gray),
          analysis_Reference(fused, infrared, visible).
``tang2022`` the same script as of commit 5d6c43a7 (2022-05-02; the same computation since
          its first upload, 2022-01-17, until 2023-03-03), which computed the repository's
          stored Metric/*.xlsx and the 2022 papers' tables: the same functions on other image
          types (``_TANG2022_UINT8``, ``_TANG2022_IM2DOUBLE``).

The metric formulas are ``metrics/toolkit_metrics.py``; docs/metrics.md lists each metric's
reference file and quirks. Inputs follow evaluate.py's convention: ``a`` plays the infrared
role, ``b`` the visible one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import numpy as np
from PIL import Image

from metrics import toolkit_metrics as tm
from metrics.evaluator import _vif
from util.images import read_rgb

#: MATLAB rgb2gray's weights (the inverse of the NTSC YIQ matrix's first row, as rgb2gray uses).
_RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)
MIN_SIDE = 32  # Qcv's 16x16 blocks, SSIM's 11x11 window and VIF's 17x17 one fit with margin

_GREY_MODES = ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L")


def matlab_rgb2gray(rgb: np.ndarray) -> np.ndarray:
    """MATLAB rgb2gray of a uint8 image: the weighted sum rounded to uint8 (halves away from
    zero), as float64."""
    r, g, b = (rgb[..., k].astype(np.float64) for k in range(3))
    return tm.round_half_away(_RGB2GRAY[0] * r + _RGB2GRAY[1] * g + _RGB2GRAY[2] * b)


def read_as_matlab(path) -> np.ndarray:
    """imread as the toolkits see it: (H, W) for a grey file, (H, W, 3) for a colour one,
    float64 values 0..255. Raises util.images.ImageError with a one-line reason."""
    rgb = read_rgb(path)
    with Image.open(path) as im:
        grey = im.mode in _GREY_MODES
    return (rgb[..., 0] if grey else rgb).astype(np.float64)


def _check(name: str, img) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected a numeric image, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"{name}: expected a grey (H, W) or colour (H, W, 3) image, "
                         f"got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: image holds NaN or infinite values; the toolkits read 8-bit "
                         "images, save it as 8-bit PNG")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError(f"{name}: values {arr.min():g}..{arr.max():g} outside 0..255; the "
                         "toolkits read 8-bit images, scale it to 0..255")
    if min(arr.shape[:2]) < MIN_SIDE:
        raise ValueError(f"{name}: image {arr.shape[1]}x{arr.shape[0]} is smaller than "
                         f"{MIN_SIDE}x{MIN_SIDE}")
    return arr


def _check_triple(fused, a, b):
    f, a, b = _check("fused", fused), _check("source A", a), _check("source B", b)
    if not (f.shape[:2] == a.shape[:2] == b.shape[:2]):
        raise ValueError(f"size mismatch: fused {f.shape[1]}x{f.shape[0]}, sources "
                         f"{a.shape[1]}x{a.shape[0]} and {b.shape[1]}x{b.shape[0]}; crop or "
                         "resize them to one size")
    return f, a, b


# --------------------------------------------------------------------------------------------
# VIFB


def _vifb_single(name: str, vi: np.ndarray, ir: np.ndarray, f: np.ndarray) -> float:
    """One VIFB metric on one channel, arguments in compute_metrics.m's order."""
    if name == "CE":
        return (tm.cross_entropy(vi, f) + tm.cross_entropy(ir, f)) / 2.0
    if name == "EN":
        return tm.entropy(f)
    if name == "MI":
        return tm.mutual_information_minmax(vi, f) + tm.mutual_information_minmax(ir, f)
    if name in ("PSNR", "RMSE"):
        rmse = (tm.vifb_rmse_term(vi, f) + tm.vifb_rmse_term(ir, f)) / 2.0
        return tm.psnr_from(rmse) if name == "PSNR" else rmse
    if name == "AG":
        return tm.average_gradient(f, "(r-1)(c-1)")
    if name == "Qabf":
        return tm.qabf(vi, ir, f, scale=255.0)
    if name == "SD":
        return tm.standard_deviation(f)
    if name == "SSIM":
        return tm.ssim_gaussian(vi, f) + tm.ssim_gaussian(ir, f)
    if name == "Qcb":
        return tm.qcb(vi, ir, f)
    if name == "Qcv":
        return tm.qcv(vi, ir, f)
    raise KeyError(name)


def _vifb_metric(name: str, vi: np.ndarray, ir: np.ndarray, f: np.ndarray) -> float:
    """VIFB's colour handling: a colour fused image is measured channel by channel (a grey
    source used for every channel) and the channel values averaged; EI filters all channels
    at once; SF sees the channels side by side (MATLAB's [m, n] = size of an m x n x 3 array
    makes n three times the width). A grey fused image is compared with rgb2gray of a colour
    source."""
    if name == "SF":
        wide = np.concatenate([f[..., k] for k in range(3)], axis=1) if f.ndim == 3 else f
        return tm.spatial_frequency(wide, normalise="mn")
    if name == "EI":
        chans = [f[..., k] for k in range(3)] if f.ndim == 3 else [f]
        return float(np.mean([tm.edge_intensity(c) for c in chans]))
    if f.ndim == 2:
        vi = matlab_rgb2gray(vi) if vi.ndim == 3 else vi
        ir = matlab_rgb2gray(ir) if ir.ndim == 3 else ir
        return _vifb_single(name, vi, ir, f)
    vals = [_vifb_single(name, vi[..., k] if vi.ndim == 3 else vi,
                         ir[..., k] if ir.ndim == 3 else ir, f[..., k]) for k in range(3)]
    return float(np.mean(vals))


# --------------------------------------------------------------------------------------------
# Tang's evaluation


def _tang_grey(img: np.ndarray) -> np.ndarray:
    """The uint8 grey image analysis_Reference receives, and its im2double(x) * 255 copy."""
    return matlab_rgb2gray(img) if img.ndim == 3 else img


def _tang_mse01(f1, ir1, vi1) -> float:
    """MSE_evaluation: the mean of the two sources' MSE on the 0..1 scale."""
    return (tm.mean_squared_error(ir1 / 255.0, f1 / 255.0) * 0.5
            + tm.mean_squared_error(vi1 / 255.0, f1 / 255.0) * 0.5)


def _tang_vif(f1, ir1, vi1, uint8_products: bool = False) -> float:
    """vifp_mscale(ir, F) + vifp_mscale(vi, F); a constant source gives 0/0 = NaN there.
    ``uint8_products``: called on the uint8 images (the 2022 script)."""
    terms = _vif(f1, [ir1, vi1], uint8_products=uint8_products)
    return sum(math.nan if np.ptp(src) == 0 else v for v, src in zip(terms, (ir1, vi1)))


_TANG_FLOAT: Dict[str, Callable] = {
    "SF": lambda f, ir, vi: tm.spatial_frequency(f, normalise="count"),
    "SD": lambda f, ir, vi: tm.standard_deviation(f),
    "PSNR": lambda f, ir, vi: tm.psnr_from(_tang_mse01(f, ir, vi)),  # 255 peak on 0..1 data
    "MSE": _tang_mse01,
    "VIF": _tang_vif,
    "AG": lambda f, ir, vi: tm.average_gradient(f, "(r-1)(c-1)"),
    # CC_evaluation centres the visible image with the infrared mean in its cross term
    "CC": lambda f, ir, vi: (tm.corr2(f, ir) + tm.corr2(f, vi, y_mean=ir.mean())) / 2.0,
    "SCD": lambda f, ir, vi: tm.corr2(f - vi, ir) + tm.corr2(f - ir, vi),
    "Qabf": lambda f, ir, vi: tm.qabf(ir, vi, f),
    "Nabf": lambda f, ir, vi: tm.nabf(f, ir, vi),
    # MATLAB's ssim on doubles: dynamic range 1 although the images are 0..255
    "SSIM": lambda f, ir, vi: 0.5 * tm.ssim_gaussian(f, ir, 1.0, "replicate")
    + 0.5 * tm.ssim_gaussian(f, vi, 1.0, "replicate"),
    # Ma's multi-exposure MEF-SSIM at three scales (analysis_ms_ssim), not Wang's MS-SSIM
    "MS_SSIM": lambda f, ir, vi: tm.mef_ssim_multiscale(ir, vi, f),
    # analysis_fmi's default features are MATLAB's edge maps: the script's "FMI_pixel"
    "FMI_pixel": lambda f, ir, vi: tm.fmi(ir, vi, f, "edge"),
    "FMI_dct": lambda f, ir, vi: tm.fmi(ir, vi, f, "dct"),
    "FMI_w": lambda f, ir, vi: tm.fmi(ir, vi, f, "wavelet"),
    # what analysis_Reference reports: analysis_nabf(img1, img2, img_f), fused image last
    "Nabf_tang_order": lambda f, ir, vi: tm.nabf(ir, vi, f),
}


def _tang_single(name: str, f: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """One metric of analysis_Reference(img_f, img1 = infrared, img2 = visible) on uint8 grey
    images: EN and MI on the integer images, the rest on im2double(x) * 255 = x / 255 * 255."""
    if name == "EN":
        return tm.entropy(f)
    if name == "MI":
        return tm.mutual_information_saturated(ir, f) + tm.mutual_information_saturated(vi, f)
    return _TANG_FLOAT[name](*(x / 255.0 * 255.0 for x in (f, ir, vi)))


# The 2022 analysis_Reference.m (commit 5d6c43a7, the script behind Metric/Metric_TNO.xlsx and
# the 2022 papers) called the same functions on other image types: these on the uint8 images ...
_TANG2022_UINT8: Dict[str, Callable] = {
    "SD": lambda f, ir, vi: tm.standard_deviation(f, uint8=True),  # SD_evaluation(image_f)
    "VIF": lambda f, ir, vi: _tang_vif(f, ir, vi, uint8_products=True),
    "SSIM": lambda f, ir, vi: tm.mef_ssim(ir, vi, f),  # mef_ssim(imgSeq, image_f), one scale
}
# ... these on im2double's 0..1 images (the formulas of _TANG_FLOAT, unchanged), Nabf with the
# fused image first; the others (EN, MI, PSNR, MSE, AG, MS_SSIM) are the calls of today.
_TANG2022_IM2DOUBLE = ("SF", "CC", "SCD", "Qabf", "Nabf", "FMI_pixel", "FMI_dct", "FMI_w")


def _tang2022_single(name: str, f: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """One output of the 2022 analysis_Reference(image_f, image_ir, image_vis) on uint8 grey
    images."""
    if name in _TANG2022_UINT8:
        return _TANG2022_UINT8[name](f, ir, vi)
    if name in _TANG2022_IM2DOUBLE:
        return _TANG_FLOAT[name](f / 255.0, ir / 255.0, vi / 255.0)
    return _tang_single(name, f, ir, vi)


# --------------------------------------------------------------------------------------------
# MEFB


def _mefb_grey(name: str, a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """One MEFB metric on one channel: metricsX(imgA, imgB, fused)'s inner function."""
    if name == "CE":
        return (tm.cross_entropy(a, f) + tm.cross_entropy(b, f)) / 2.0
    if name == "PSNR":  # VIFB's 'mse' helper, sqrt(SSE) / (m n), under the name PSNR
        return tm.psnr_from((tm.vifb_rmse_term(a, f) + tm.vifb_rmse_term(b, f)) / 2.0)
    if name == "Qabf":
        return tm.qabf(a, b, f, scale=255.0)
    return _MEFB_GREY[name](a, b, f)


_MEFB_GREY: Dict[str, Callable] = {
    "EN": lambda a, b, f: tm.entropy(f),
    "FMI": lambda a, b, f: tm.fmi(a, b, f, "edge"),  # metricsFMI's default features
    "NMI": tm.nmi,
    "Qncie": tm.qncie,
    "TE": tm.tsallis_metric,
    "AG": lambda a, b, f: tm.average_gradient(f, "(r-1)(c-1)"),
    "EI": lambda a, b, f: tm.edge_intensity(f),
    "SD": lambda a, b, f: tm.standard_deviation(f),
    "SF": lambda a, b, f: tm.spatial_frequency(f, normalise="mn"),
    "Qp": tm.qp,
    "Qc": tm.qc,
    "Qw": tm.piella,
    "Qy": tm.qy,
    "Qcb": lambda a, b, f: tm.qcb(a, b, f, im2double=True),
    "Qcv": tm.qcv,
    "VIFF": tm.viff,
}


def _mefb_metric(name: str, a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """MEFB's colour handling: colour sources and fused image channel by channel, the channel
    values averaged; grey sources with a colour fused image: its first (red) channel, except
    AG, which takes rgb2gray of the double image (unrounded). MEF-SSIM converts all three with
    rgb2gray (uint8) and fails on grey images in MEFB's code: NaN here."""
    if a.ndim != b.ndim or (a.ndim == 3 and f.ndim == 2):
        raise ValueError("MEFB's metrics need both sources grey, or sources and fused image all "
                         "colour; convert the images to one kind")
    if name == "MEF_SSIM":
        if a.ndim == 2:
            return math.nan
        a, b, f = matlab_rgb2gray(a), matlab_rgb2gray(b), matlab_rgb2gray(f)
        return tm.mef_ssim_multiscale(a, b, f)
    if a.ndim == 2 and f.ndim == 3:
        f = (_RGB2GRAY[0] * f[..., 0] + _RGB2GRAY[1] * f[..., 1] + _RGB2GRAY[2] * f[..., 2]
             if name == "AG" else f[..., 0])
    if f.ndim == 2:
        return _mefb_grey(name, a, b, f)
    return float(np.mean([_mefb_grey(name, a[..., k], b[..., k], f[..., k]) for k in range(3)]))


# --------------------------------------------------------------------------------------------
# Liu's toolbox


_LIU: Dict[str, Callable] = {
    "Qmi": tm.nmi,
    "Qte": tm.tsallis_nava,
    "Qncie": tm.qncie,
    "Qg": tm.xydeas_liu,
    "Qm": tm.qm_pww,
    "Qsf": tm.spatial_frequency_ratio,
    "Qp": tm.qp,
    "Qs": lambda a, b, f: tm.piella(a, b, f, weighting="none", on_edges=False),
    "Qc": lambda a, b, f: tm.qc(a, b, f, drop_nan=False),
    "Qy": lambda a, b, f: tm.qy(a, b, f, drop_nan=False),
    "Qcv": tm.qcv,
    "Qcb": tm.qcb,
}


def _liu_metric(name: str, a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """One metric of Liu's fusionAssess(im1 = a, im2 = b, fused) on double images; the toolbox
    is for grey images, so a colour image is made grey with MATLAB's rgb2gray (rounded) first."""
    a, b, f = (matlab_rgb2gray(x) if x.ndim == 3 else x for x in (a, b, f))
    return _LIU[name](a, b, f)


# --------------------------------------------------------------------------------------------
# profiles


@dataclass(frozen=True)
class ToolkitProfile:
    """A toolkit's table: its columns in its order, how it reads an image file, and a function
    (fused, a = infrared, b = visible) -> {column: value}."""
    name: str
    description: str
    columns: Tuple[str, ...]
    compute: Callable[[np.ndarray, np.ndarray, np.ndarray], Dict[str, float]]
    metric: Callable[[str, np.ndarray, np.ndarray, np.ndarray], float]  # (name, f, a, b), checked input
    read: Callable = read_as_matlab
    decimals: int = 4  # Tang's script prints %.4f; VIFB stores 5 significant digits

    def evaluate_pair(self, fused, a, b) -> Dict[str, float]:
        f, a, b = _check_triple(fused, a, b)
        return self.compute(f, a, b)


VIFB_COLUMNS = ("CE", "EN", "MI", "PSNR", "AG", "EI", "Qabf", "SD", "SF", "RMSE", "SSIM", "Qcb",
                "Qcv")
MEFB_COLUMNS = ("CE", "EN", "FMI", "NMI", "PSNR", "Qncie", "TE", "AG", "EI", "Qabf", "Qp", "SD", "SF",
                "Qc", "Qw", "Qy", "MEF_SSIM", "Qcb", "Qcv", "VIFF")
LIU_COLUMNS = ("Qmi", "Qte", "Qncie", "Qg", "Qm", "Qsf", "Qp", "Qs", "Qc", "Qy", "Qcv", "Qcb")
TANG_COLUMNS = ("EN", "SF", "SD", "PSNR", "MSE", "MI", "VIF", "AG", "CC", "SCD", "Qabf", "Nabf",
                "Nabf_tang_order", "SSIM", "MS_SSIM", "FMI_pixel", "FMI_dct", "FMI_w")
#: the 2022 analysis_Reference's 17 outputs, in its order (Nabf then in the right order)
TANG2022_COLUMNS = tuple(name for name in TANG_COLUMNS if name != "Nabf_tang_order")


def _vifb_compute(f, ir, vi) -> Dict[str, float]:
    return {name: _vifb_metric(name, vi, ir, f) for name in VIFB_COLUMNS}


def _mefb_compute(f, a, b) -> Dict[str, float]:
    return {name: _mefb_metric(name, a, b, f) for name in MEFB_COLUMNS}


def _liu_compute(f, a, b) -> Dict[str, float]:
    return {name: _liu_metric(name, a, b, f) for name in LIU_COLUMNS}


def _tang_compute(f, ir, vi) -> Dict[str, float]:
    f, ir, vi = _tang_grey(f), _tang_grey(ir), _tang_grey(vi)
    return {name: _tang_single(name, f, ir, vi) for name in TANG_COLUMNS}


def _tang2022_compute(f, ir, vi) -> Dict[str, float]:
    f, ir, vi = _tang_grey(f), _tang_grey(ir), _tang_grey(vi)
    return {name: _tang2022_single(name, f, ir, vi) for name in TANG2022_COLUMNS}


TOOLKIT_PROFILES: Dict[str, ToolkitProfile] = {
    "vifb": ToolkitProfile(
        "vifb", "VIFB's 13 metrics with its MATLAB conventions (colour images channel by "
        "channel; RMSE = sqrt(SSE)/(m n); SSIM summed over the two sources)", VIFB_COLUMNS,
        _vifb_compute, lambda name, f, ir, vi: _vifb_metric(name, vi, ir, f)),
    "mefb": ToolkitProfile(
        "mefb", "MEFB's metrics with its MATLAB conventions, metricsX(A = infrared, B = visible, "
        "fused); colour images channel by channel",
        MEFB_COLUMNS, _mefb_compute, lambda name, f, a, b: _mefb_metric(name, a, b, f)),
    "liu": ToolkitProfile(
        "liu", "Liu's imageFusionMetrics (fusionAssess.m, Liu et al. TPAMI 2012), "
        "fusionAssess(A = infrared, B = visible, fused), colour made grey by rgb2gray; all 12 "
        "columns", LIU_COLUMNS, _liu_compute,
        lambda name, f, a, b: _liu_metric(name, a, b, f)),
    "tang": ToolkitProfile(
        "tang", "Tang's Evaluation-for-Image-Fusion (analysis_Reference.m), grey uint8 inputs; "
        "Nabf_tang_order is what its script reports (arguments out of order); SSIM follows "
        "MATLAB's ssim (its source's algorithm, not run); FMI_pixel is FMI of MATLAB's edge "
        "maps", TANG_COLUMNS,
        _tang_compute, lambda name, f, ir, vi: _tang_single(name, _tang_grey(f), _tang_grey(ir),
                                                           _tang_grey(vi))),
    "tang2022": ToolkitProfile(
        "tang2022", "Tang's analysis_Reference.m as of commit 5d6c43a7 (2022-05-02), which wrote "
        "the repository's Metric/*.xlsx and the 2022 papers' numbers (SeAFusion, PIAFusion, "
        "SwinFusion): SD and VIF of the uint8 images, SF, CC, SCD, Qabf, Nabf and FMI of "
        "im2double's 0..1 ones, SSIM = MEF-SSIM at one scale, Nabf(fused, ir, vi)",
        TANG2022_COLUMNS, _tang2022_compute,
        lambda name, f, ir, vi: _tang2022_single(name, _tang_grey(f), _tang_grey(ir),
                                                 _tang_grey(vi))),
}
