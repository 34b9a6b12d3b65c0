"""metrics.compiled: the numba kernels of FMI and phase congruency equal the NumPy forms in
metrics.toolkit_metrics (which the Octave references check) to 1e-12 of the values' scale, on
real crops and on the windows where the formulas branch; DDFM_METRIC_KERNELS picks between them
and a bad choice is a one-line error."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, toolkit_crop
from metrics import toolkit_metrics as tm
from metrics.toolkits import matlab_rgb2gray

pytestmark = pytest.mark.numeric

needs_numba = pytest.mark.skipif(not tm.compiled_available(),
                                 reason="the compiled kernels need numba (pip install numba)")

# Both forms compute in float64 and differ in the order of a few sums and in exp/sqrt against
# NumPy's SIMD loops: a few ulps of values in 0..1. 1e-12 leaves three orders of margin for
# another CPU's kernels and still fails on any formula difference.
ATOL = 1e-12
CASES = ("tno_mean", "tno_saturated", "kettle_colour", "walkingnight_grey_ir", "constant_fused",
         "constant_source")


def _grey_crop(case: str) -> tuple:
    """(fused, infrared, visible) of a toolkit crop, grey."""
    return tuple(matlab_rgb2gray(x) if x.ndim == 3 else x for x in toolkit_crop(case))


def _both(monkeypatch, fn, *args):
    """fn(*args) with the NumPy forms, then with the compiled kernels."""
    monkeypatch.setenv(tm.KERNELS_VARIABLE, "numpy")
    numpy_value = fn(*args)
    monkeypatch.setenv(tm.KERNELS_VARIABLE, "compiled")
    return numpy_value, fn(*args)


def _branching_windows() -> tuple:
    """Three 40x44 images whose windows take every branch of FMI: equal windows (identical
    areas), flat windows (constant areas), ties inside a window, negative and zero
    correlation with the fused window, and smooth areas."""
    rng = np.random.default_rng(11)
    f = rng.integers(0, 4, (40, 44)).astype(np.float64)  # few levels: many ties
    a = f.copy()
    a[:, 20:] = 255.0 - f[:, 20:]  # negative correlation
    a[10:20] = 7.0  # flat
    b = rng.normal(128, 40, (40, 44)).round()
    b[:12, :12] = f[:12, :12]  # equal windows
    f[30:, 30:] = 3.0  # flat fused area
    yy, xx = np.mgrid[:40, :44]
    b[25:, :15] = (xx + 2 * yy)[25:, :15]  # smooth ramp
    return a, b, f


@needs_numba
@pytest.mark.parametrize("feature", list(tm.FMI_FEATURES))
def test_compiled_fmi_equals_numpy(monkeypatch, feature):
    """Every FMI feature on the six crops (constant images among them) and on the branching
    windows."""
    triples = [(ir, vi, f) for f, ir, vi in map(_grey_crop, CASES)] + [_branching_windows()]
    for a, b, f in triples:
        want, got = _both(monkeypatch, tm.fmi, a, b, f, feature)
        assert abs(got - want) <= ATOL, (feature, got, want)


@needs_numba
def test_compiled_fmi_sees_windows_as_the_numpy_form():
    """The kernel's per-window statistics and pair values are those of _FmiWindows/_fmi_pair,
    window by window (a sum could hide two errors that cancel)."""
    from metrics import compiled

    a, b, f = _branching_windows()
    # a 3x3 image has one window: the kernel's mean is that window's value
    for top in range(0, 38, 5):
        rows = slice(top, top + 3)
        fused = tm._FmiWindows(f[rows])
        want = (tm._fmi_pair(tm._FmiWindows(a[rows]), fused)
                + tm._fmi_pair(tm._FmiWindows(b[rows]), fused)) / 2.0
        for c in range(0, 42, 7):
            got = compiled.fmi_window_mean(*(np.ascontiguousarray(x[rows, c:c + 3]) for x in (a, b, f)))
            assert abs(got - want[c]) <= ATOL, (top, c, got, want[c])


@needs_numba
@pytest.mark.parametrize("case", CASES)
def test_compiled_phase_congruency_and_qp_equal_numpy(monkeypatch, case):
    """PC, M and m per pixel, and Qp, on the six crops: NaN where the NumPy form has NaN (a
    constant image's PC is 0/0)."""
    f, ir, vi = _grey_crop(case)
    for img in (f, ir, vi):
        want, got = _both(monkeypatch, tm.phase_congruency, img)
        for w, g in zip(want, got):
            assert np.array_equal(np.isnan(w), np.isnan(g))
            assert np.nanmax(np.abs(g - w), initial=0.0) <= ATOL
    want, got = _both(monkeypatch, tm.qp, ir, vi, f)
    assert (math.isnan(want) and math.isnan(got)) or abs(got - want) <= ATOL, (got, want)


@needs_numba
def test_kernel_choice(monkeypatch):
    monkeypatch.setenv(tm.KERNELS_VARIABLE, "numpy")
    assert tm.compiled_kernels() is None
    for choice in ("compiled", "auto", ""):  # unset or empty: auto
        monkeypatch.setenv(tm.KERNELS_VARIABLE, choice)
        assert tm.compiled_kernels().__name__ == "metrics.compiled"
    monkeypatch.setenv(tm.KERNELS_VARIABLE, "fast")
    with pytest.raises(ValueError, match=r"^DDFM_METRIC_KERNELS='fast': use one of auto, numpy, compiled$"):
        tm.compiled_kernels()


def test_without_numba_auto_is_numpy_and_compiled_an_error(monkeypatch):
    monkeypatch.setattr(tm, "_import_compiled", lambda: (None, "No module named 'numba'"))
    monkeypatch.setenv(tm.KERNELS_VARIABLE, "auto")
    assert tm.compiled_kernels() is None
    monkeypatch.setenv(tm.KERNELS_VARIABLE, "compiled")
    with pytest.raises(ValueError, match=r"needs numba \(No module named 'numba'\); pip install numba"):
        tm.compiled_kernels()


def test_evaluate_refuses_an_unknown_kernel_choice_in_one_line(tmp_path):
    env = {**os.environ, "DDFM_METRIC_KERNELS": "fastest"}
    run = subprocess.run([sys.executable, "evaluate.py", "--input", str(tmp_path), "--fused",
                          str(tmp_path / "f"), "--profile", "tang"], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr == ("evaluate.py: error: DDFM_METRIC_KERNELS='fastest': use one of auto, "
                          "numpy, compiled\n")
