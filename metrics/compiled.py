"""Compiled kernels (numba) for the two costliest toolkit metrics, FMI and the phase congruency
behind Qp: the arithmetic of their NumPy forms in ``metrics/toolkit_metrics.py``, one pass per
window or pixel instead of one NumPy pass per operation.

Optional: importing this module needs numba (``pip install numba``); ``toolkit_metrics``
imports it only when numba is installed and ``DDFM_METRIC_KERNELS`` is not ``numpy``, and uses
the NumPy forms otherwise. Both forms are tested to agree to 1e-12 (tests/test_toolkits.py);
they differ only in rounding (the order of a few sums, libm's exp against NumPy's). Compiled
code is cached beside this file (numba's ``cache=True``; a read-only install caches under the
user's cache folder), so only the first run on a machine spends the seconds compiling.
"""
from __future__ import annotations

import math

import numba
import numpy as np

# error_model="numpy": 0/0 is NaN and x/0 inf, as in the NumPy forms (the references' values
# for constant images), never ZeroDivisionError
_jit = numba.njit(cache=True, error_model="numpy", nogil=True)
_inline = numba.njit(cache=True, error_model="numpy", inline="always")


# --------------------------------------------------------------------------------------------
# FMI: analysis_fmi.m's 3x3 windows (toolkit_metrics._FmiWindows, _fmi_pair, _fmi_windows)


@_inline
def _xlog2x(x):
    return 0.0 if x == 0.0 else x * math.log2(abs(x))


@_inline
def _window(feature, r, c, raw, pdf, cdf, centred):
    """The window at (r, c) as _FmiWindows sees it: raw values in MATLAB's sub(:) order, pdf,
    cdf and centred pdf written into the given arrays; returns (entropy, sd of the pdf)."""
    k = 0
    for dx in range(3):
        for dy in range(3):
            raw[k] = feature[r + dy, c + dx]
            k += 1
    lo, hi = raw[0], raw[0]
    for k in range(1, 9):
        lo, hi = min(lo, raw[k]), max(hi, raw[k])
    for k in range(9):
        pdf[k] = 1.0 if hi == lo else (raw[k] - lo) / (hi - lo)
    total = 0.0
    for k in range(9):
        total += pdf[k]
    running = entropy = first = second = mean = 0.0
    for k in range(9):
        p = pdf[k] / total
        pdf[k] = p
        running += p
        cdf[k] = running
        entropy -= _xlog2x(p)
        first += (k + 1.0) * p
        second += (k + 1.0) * (k + 1.0) * p
        mean += p
    for k in range(9):
        centred[k] = pdf[k] - mean / 9.0
    return entropy, math.sqrt(max(second - first * first, 0.0))


@_inline
def _pair(src, fused, src_entropy, src_sd, fused_entropy, fused_sd, path_cdf, mass, cell_i, cell_j):
    """fmi of one window pair (_fmi_pair / _fmi_windows): src and fused are (4, 9) arrays of
    raw, pdf, cdf and centred pdf. The comonotone path of the copula bound is found by merging
    the two nondecreasing cdfs, which gives _monotone_path's counts."""
    equal = True
    for k in range(9):
        equal = equal and src[0, k] == fused[0, k]
    if equal:
        return 1.0  # the reference's aSub == fSub
    cross = src_ss = fused_ss = 0.0
    for k in range(9):
        cross += src[3, k] * fused[3, k]
        src_ss += src[3, k] * src[3, k]
        fused_ss += fused[3, k] * fused[3, k]
    c = 0.0 if cross == 0.0 else cross / math.sqrt(src_ss * fused_ss)
    neg = c < 0.0  # the lower bound: the source's bins reversed
    for k in range(9):
        path_cdf[k] = (1.0 - src[2, 7 - k] if k < 8 else 1.0) if neg else src[2, k]
    j = 0
    for i in range(9):  # the interval ending at each fused breakpoint
        while j < 9 and path_cdf[j] < fused[2, i]:
            j += 1
        start = max(fused[2, i - 1] if i > 0 else 0.0, path_cdf[j - 1] if j > 0 else 0.0)
        cell_i[i], cell_j[i], mass[i] = i, min(j, 8), fused[2, i] - start if j < 9 else 0.0
    i = 0
    for j in range(9):  # ... and at each source breakpoint
        while i < 9 and fused[2, i] <= path_cdf[j]:
            i += 1
        start = max(path_cdf[j - 1] if j > 0 else 0.0, fused[2, i - 1] if i > 0 else 0.0)
        cell_i[9 + j], cell_j[9 + j], mass[9 + j] = min(i, 8), j, path_cdf[j] - start if i < 9 else 0.0
    cov = fused_cdf_sum = src_cdf_sum = 0.0
    for n in range(18):
        if neg:
            cell_j[n] = 8 - cell_j[n]
        cov += mass[n] * (9 - cell_i[n]) * (9 - cell_j[n])
    for k in range(9):
        fused_cdf_sum += fused[2, k]
        src_cdf_sum += src[2, k]
    cov -= fused_cdf_sum * src_cdf_sum
    degenerate = src_sd == 0.0 or fused_sd == 0.0 or c == 0.0
    mix = 0.0 if degenerate else c / (cov / (fused_sd * src_sd))
    rest = 1.0 - mix
    on_path = 0.0
    for n in range(18):
        indep = fused[1, cell_i[n]] * src[1, cell_j[n]] * rest
        on_path += _xlog2x(mix * mass[n] + indep) - _xlog2x(indep)
    mi = src_entropy + fused_entropy + (_xlog2x(rest) - rest * (fused_entropy + src_entropy)) + on_path
    return 0.0 if mi == 0.0 else 2.0 * mi / (src_entropy + fused_entropy)


@_jit
def fmi_window_mean(a, b, f):
    """Mean over the interior 3x3 windows of (fmi(a, f) + fmi(b, f)) / 2, for three feature
    images of one shape (toolkit_metrics.fmi after its features)."""
    rows, cols = f.shape[0] - 2, f.shape[1] - 2
    wa, wb, wf = np.empty((4, 9)), np.empty((4, 9)), np.empty((4, 9))
    path_cdf, mass = np.empty(9), np.empty(18)
    cell_i, cell_j = np.empty(18, np.int64), np.empty(18, np.int64)
    total = 0.0
    for r in range(rows):
        row_total = 0.0
        for c in range(cols):
            hf, sf = _window(f, r, c, wf[0], wf[1], wf[2], wf[3])
            ha, sa = _window(a, r, c, wa[0], wa[1], wa[2], wa[3])
            hb, sb = _window(b, r, c, wb[0], wb[1], wb[2], wb[3])
            row_total += (_pair(wa, wf, ha, sa, hf, sf, path_cdf, mass, cell_i, cell_j)
                          + _pair(wb, wf, hb, sb, hf, sf, path_cdf, mass, cell_i, cell_j)) / 2.0
        total += row_total
    return total / (rows * cols)


# --------------------------------------------------------------------------------------------
# phase congruency (toolkit_metrics._pc_orientation and phase_congruency's sums)


@_jit
def pc_accumulate(eo, threshold, cos_a, sin_a, eps, scales, sums):
    """Add one orientation of myphasecong3 to the running sums, per pixel: ``eo`` is (scales,
    H, W), the filters' complex responses; ``sums`` (5, H, W) is total energy, total amplitude
    and the covariance terms cx^2, cy^2, cx cy, updated in place. The orientation's energy
    (sum E) mean_E + (sum O) mean_O - sum |E mean_O - O mean_E| less the noise ``threshold``,
    weighted by the filters' spread, divided by its amplitude, is its phase congruency."""
    rows, cols = eo.shape[1], eo.shape[2]
    for y in range(rows):
        for x in range(cols):
            sum_an = sum_e = sum_o = 0.0
            max_an = -np.inf
            for s in range(scales):
                even, odd = eo[s, y, x].real, eo[s, y, x].imag
                amp = math.sqrt(even * even + odd * odd)  # libm's hypot is 10x slower
                sum_an += amp
                max_an = max(max_an, amp)
                sum_e += even
                sum_o += odd
            x_energy = math.sqrt(sum_e * sum_e + sum_o * sum_o) + eps
            mean_e, mean_o = sum_e / x_energy, sum_o / x_energy
            energy = sum_e * mean_e + sum_o * mean_o
            for s in range(scales):
                energy -= abs(eo[s, y, x].real * mean_o - eo[s, y, x].imag * mean_e)
            energy = max(energy - threshold, 0.0)
            width = sum_an / (max_an + eps) / scales
            weighted = 1.0 / (1.0 + math.exp((0.5 - width) * 10.0)) * energy
            pc = weighted / sum_an
            cx, cy = pc * cos_a, pc * sin_a
            sums[0, y, x] += weighted
            sums[1, y, x] += sum_an
            sums[2, y, x] += cx * cx
            sums[3, y, x] += cy * cy
            sums[4, y, x] += cx * cy
