"""metrics.evaluator: equal to the reference evaluator's numbers (golden/metrics/expected.json),
to independent transcriptions of its formulas, and well-behaved on degenerate images."""
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.signal import convolve2d

from metrics import evaluator as M
from tolerance import EPS32, rel_ulps
from util.images import IMAGE_EXTENSIONS, read_gray

pytestmark = pytest.mark.numeric

# Against the reference's numbers: 8 units of float32 resolution of each value. Most metrics come
# out bit for bit; Qabf's per-pixel np.exp/np.arctan run on whichever float32 SIMD kernel numpy
# picks for the CPU (they differ by an ulp or so per pixel), measured 0.85 units after the sums;
# VIF and MI are float64 (0.04 units). A wrong window, rule or constant moves a metric by >1e-4.
RTOL = 8 * EPS32
# Qabf against the reference: the result's own rounding (0.5) and the per-pixel kernels above,
# averaged by the sums (0.85 units measured with numpy's AVX2 and baseline kernels); one of its
# constants off in the 4th digit (0.9994 -> 0.9995) moves it by 840 units.
QABF_ULPS = 2
CASES = ("roadscene_mean", "mri_ct_max", "flir_ddfm_tiny_100steps")
REPO = Path(__file__).resolve().parents[1]


def _find(folder: Path, stem: str) -> Path:
    hits = [p for p in folder.iterdir() if p.stem == stem and p.suffix.lower() in IMAGE_EXTENSIONS]
    assert len(hits) == 1, f"{folder}/{stem}.*: {hits}"
    return hits[0]


def _triple(case: dict, stem: str):
    """Fused image and its two sources, the sources cropped top-left to the fused size."""
    f = read_gray(_find(case["fused"], stem))
    m1, m2 = case["modalities"]
    a = read_gray(_find(case["input"] / m1, stem))[:f.shape[0], :f.shape[1]]
    b = read_gray(_find(case["input"] / m2, stem))[:f.shape[0], :f.shape[1]]
    assert f.shape == a.shape == b.shape
    return f, a, b


def _assert_close(got: dict, want: dict, where: str, rtol: float = RTOL):
    bad = {k: (got[k], want[k]) for k in want
           if not abs(got[k] - want[k]) <= rtol * max(abs(want[k]), 1e-300)}
    assert not bad, f"{where}: {bad}"


# --------------------------------------------------------------------------------------------
# equal to the reference evaluator


@pytest.fixture(scope="module")
def computed(metric_cases):
    """evaluate_pair on every image of every golden case (computed once)."""
    out = {}
    for name in CASES:
        case = metric_cases[name]
        out[name] = {stem: M.evaluate_pair(*_triple(case, stem))
                     for stem in case["expected"]["per_image"]}
    return out


@pytest.mark.parametrize("name", CASES)
def test_evaluate_pair_matches_reference_per_image(name, computed, metric_cases):
    expected = metric_cases[name]["expected"]["per_image"]
    assert set(computed[name]) == set(expected)
    for stem, want in expected.items():
        assert set(want) == set(M.METRIC_NAMES)
        _assert_close(computed[name][stem], want, f"{name}/{stem}")


@pytest.mark.parametrize("name", CASES)
def test_evaluate_pair_matches_reference_mean(name, computed, metric_cases):
    want = metric_cases[name]["expected"]["mean"]
    got = {k: float(np.mean([v[k] for v in computed[name].values()])) for k in M.METRIC_NAMES}
    _assert_close(got, want, f"{name} mean")


PUBLIC = {
    "EN": lambda f, a, b: M.entropy(f),
    "SD": lambda f, a, b: M.standard_deviation(f),
    "SF": lambda f, a, b: M.spatial_frequency(f),
    "AG": lambda f, a, b: M.average_gradient(f),
    "MI": M.mutual_information,
    "SCD": M.scd,
    "VIF": M.vif,
    "Qabf": M.qabf,
    "SSIM": M.ssim,
    "MSE": M.mse,
    "CC": M.cc,
    "PSNR": M.psnr,
}


@pytest.mark.parametrize("name", CASES)
def test_public_functions_match_reference(name, metric_cases):
    """Each metric's own function, per image and in the mean (uint8 input for one image each,
    to show the float32 conversion is the reader's)."""
    case = metric_cases[name]
    expected = case["expected"]
    got_all = {}
    for i, stem in enumerate(expected["per_image"]):
        f, a, b = _triple(case, stem)
        if i == 0:
            f, a, b = (x.astype(np.uint8) for x in (f, a, b))
        got_all[stem] = {k: fn(f, a, b) for k, fn in PUBLIC.items()}
        assert all(type(v) is float for v in got_all[stem].values())
        _assert_close(got_all[stem], expected["per_image"][stem], f"{name}/{stem}")
    mean = {k: float(np.mean([v[k] for v in got_all.values()])) for k in M.METRIC_NAMES}
    _assert_close(mean, expected["mean"], f"{name} mean")


def test_float32_metrics_are_bit_exact(computed, metric_cases):
    """The metrics the reference computes in float32 come out as the very same float32 values
    (numpy 1.24's chunked pairwise sums reproduced), not merely within 1e-6. Exact, on any CPU,
    for those built only from correctly rounded IEEE operations (+ - * / sqrt) in a fixed order;
    Qabf also takes np.exp and np.arctan per pixel, whose float32 kernels differ between CPUs by
    an ulp or so: within QABF_ULPS of its value, far below what a changed constant moves."""
    for name in CASES:
        for stem, want in metric_cases[name]["expected"]["per_image"].items():
            got = computed[name][stem]
            for k in ("SD", "SF", "AG", "SCD", "MSE", "CC", "SSIM"):
                assert got[k] == want[k], (name, stem, k, got[k], want[k])
            assert rel_ulps(got["Qabf"], want["Qabf"]) <= QABF_ULPS, (name, stem, got["Qabf"], want["Qabf"])


# --------------------------------------------------------------------------------------------
# profiles


def test_profiles(metric_cases):
    case = metric_cases["roadscene_mean"]
    f, a, b = _triple(case, next(iter(case["expected"]["per_image"])))
    ref = M.evaluate_pair(f, a, b, "reference")
    txt = M.evaluate_pair(f, a, b, M.PROFILES["textbook"])
    assert M.evaluate_pair(f, a, b) == ref
    # float64 (eps 2.2e-16): a change of logarithm base is one rounding of each of a few thousand
    # terms (~1e-14), the same SSIM arithmetic reached another way a few eps
    assert txt["MI"] == pytest.approx(ref["MI"] / math.log(2), rel=1e-12)
    assert txt["SSIM"] == pytest.approx(M.ssim(f, a, b, data_range=255.0), rel=1e-15)
    assert txt["SSIM"] != ref["SSIM"]
    for k in set(M.METRIC_NAMES) - {"MI", "SSIM"}:
        assert txt[k] == ref[k]
    assert M.mutual_information(f, a, b, base=2) == pytest.approx(txt["MI"], rel=1e-12)  # as above
    with pytest.raises(ValueError, match="reference, textbook"):
        M.get_profile("paper")
    assert list(M.TABLE_COLUMNS[:6]) == ["EN", "SD", "MI", "VIF", "Qabf", "SSIM"]
    assert sorted(M.TABLE_COLUMNS) == sorted(M.METRIC_NAMES)


# --------------------------------------------------------------------------------------------
# building blocks against plain transcriptions


def _pairwise_sum_scalar(a):
    """numpy 1.24's pairwise_sum for float32, written out."""
    n = len(a)
    if n < 8:
        res = np.float32(0.0)
        for v in a:
            res = np.float32(res + v)
        return res
    if n <= 128:
        r = [np.float32(v) for v in a[:8]]
        i = 8
        while i < n - n % 8:
            for j in range(8):
                r[j] = np.float32(r[j] + a[i + j])
            i += 8
        res = np.float32(np.float32(np.float32(r[0] + r[1]) + np.float32(r[2] + r[3]))
                         + np.float32(np.float32(r[4] + r[5]) + np.float32(r[6] + r[7])))
        for v in a[i:]:
            res = np.float32(res + v)
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return np.float32(_pairwise_sum_scalar(a[:n2]) + _pairwise_sum_scalar(a[n2:]))


def _numpy124_sum_scalar(a):
    total = np.float32(0.0)
    for i in range(0, len(a), 8192):
        total = np.float32(total + _pairwise_sum_scalar(a[i:i + 8192]))
    return total


@pytest.mark.parametrize("n", [1, 5, 7, 8, 9, 100, 128, 129, 300, 8191, 8192, 8193, 20000, 50001])
def test_sum32_is_numpy124_chunked_pairwise_sum(n):
    x = (np.random.default_rng(n).random(n) * 1000).astype(np.float32)
    got = M._sum32(x)
    assert got.dtype == np.float32
    assert got == _numpy124_sum_scalar(list(x))
    # positive terms: rounding of 16 accumulations in a leaf, <= 7 tree levels and <= 6 chunk
    # additions, each at most one unit of the running sum: 32 units of float32 resolution
    assert rel_ulps(got, np.sum(x, dtype=np.float64)) <= 32


def _ssim_uniform_filter(x, y, data_range):
    """scikit-image 0.19 structural_similarity's arithmetic on float32 images, transcribed with
    scipy's uniform_filter (as scikit-image calls it)."""
    ux, uy = ndimage.uniform_filter(x, 7), ndimage.uniform_filter(y, 7)
    uxx, uyy = ndimage.uniform_filter(x * x, 7), ndimage.uniform_filter(y * y, 7)
    uxy = ndimage.uniform_filter(x * y, 7)
    cov = 49 / 48
    vx, vy, vxy = cov * (uxx - ux * ux), cov * (uyy - uy * uy), cov * (uxy - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    return s[3:-3, 3:-3].mean(dtype=np.float64)


@pytest.mark.parametrize("data_range", [2.0, 255.0])
def test_ssim_equals_uniform_filter_transcription(data_range):
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (61, 83)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 20, x.shape), 0, 255).round().astype(np.float32)
    y[10:30, 10:40] = 255  # flat, bright: where float32 rounding dominates with range 2
    x[10:30, 10:40] = 254
    want = _ssim_uniform_filter(x, y, data_range)
    assert M._ssim_pair(x, y, data_range) == want


def _vif_convolve2d(ref, dist):
    """The reference's pixel-domain VIF, transcribed with scipy.signal.convolve2d."""
    ref, dist = ref.astype(np.float64), dist.astype(np.float64)
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (5 - scale) + 1
        sd = n / 5.0
        r = (n - 1) / 2
        yy, xx = np.ogrid[-r:r + 1, -r:r + 1]
        win = np.exp(-(xx * xx + yy * yy) / (2 * sd * sd))
        win /= win.sum()
        if scale > 1:
            ref = convolve2d(ref, win, mode="valid")[::2, ::2]
            dist = convolve2d(dist, win, mode="valid")[::2, ::2]
        mu1, mu2 = convolve2d(ref, win, mode="valid"), convolve2d(dist, win, mode="valid")
        s1 = convolve2d(ref * ref, win, mode="valid") - mu1 * mu1
        s2 = np.maximum(convolve2d(dist * dist, win, mode="valid") - mu2 * mu2, 0)
        s12 = convolve2d(ref * dist, win, mode="valid") - mu1 * mu2
        nu, de = M._vif_scale_terms(s1, s2, s2 < 1e-10, s12)
        num, den = num + nu, den + de
    return num / den


def test_vif_equals_convolve2d_transcription():
    rng = np.random.default_rng(3)
    a = np.zeros((96, 112), np.float32)  # a medical-like image: exact-zero background
    a[20:80, 25:90] = rng.integers(0, 256, (60, 65))
    b = rng.integers(0, 256, a.shape).astype(np.float32)
    f = np.maximum(a, b // 2)
    got = M._vif(f, [a, b])
    want = [_vif_convolve2d(a, f), _vif_convolve2d(b, f)]
    # float64 (eps 2.2e-16) both ways, summed in other orders over up to 17x17 windows and
    # thousands of log terms (~1e-13 relative); a wrong window or scale moves VIF by > 1e-3
    assert got == pytest.approx(want, rel=1e-9)


def test_sobel_equals_convolve2d():
    x = np.random.default_rng(5).integers(0, 256, (33, 47)).astype(np.float32)
    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float32)
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    sx, sy = convolve2d(x, h3, mode="same"), convolve2d(x, h1, mode="same")
    g, ang = M._sobel(x)
    np.testing.assert_array_equal(g, np.sqrt(sx * sx + sy * sy))
    want = np.full_like(x, np.float32(math.pi / 2))
    want[sx != 0] = np.arctan(sy[sx != 0] / sx[sx != 0])
    np.testing.assert_array_equal(ang, want)


def test_loop_benchmark_code_agrees(data_root):
    """The scalar implementation the benchmark times computes the same metrics (it works in
    float64 where the reference partly works in float32, hence 1e-4)."""
    spec = importlib.util.spec_from_file_location("bench_metrics", REPO / "benchmarks" / "bench_metrics.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    a = read_gray(data_root / "RoadScene" / "ir" / "FLIR_00211.jpg")[100:140, 200:240]
    b = read_gray(data_root / "RoadScene" / "vi" / "FLIR_00211.jpg")[100:140, 200:240]
    f = np.round((a + b) / 2).astype(np.float32)
    slow = bench.loop_evaluate_pair(f, a, b)
    fast = M.evaluate_pair(f, a, b)
    _assert_close(fast, slow, "loop vs vectorised", rtol=1e-4)


# --------------------------------------------------------------------------------------------
# degenerate images: finite, documented values, no warnings

_RNG = np.random.default_rng(11)
A = _RNG.integers(0, 256, (48, 64)).astype(np.float32)
B = _RNG.integers(0, 256, (48, 64)).astype(np.float32)
CONST = np.full((48, 64), 128, np.float32)
ZERO = np.zeros((48, 64), np.float32)
VLINE = ZERO.copy()
VLINE[:, 31] = 255
HLINE = ZERO.copy()
HLINE[20, :] = 200
CHECKER = (np.indices((48, 64)).sum(0) % 2 * 255).astype(np.float32)

EDGE_CASES = {
    "constant fused": (CONST, A, B),
    "constant sources": (A, CONST, CONST),
    "one constant source": (A, CONST, B),
    "all equal constant": (CONST, CONST, CONST),
    "all zero": (ZERO, ZERO, ZERO),
    "black fused": (ZERO, A, B),
    "fused equals source": (A, A, B),
    "all three equal": (A, A, A),
    "1-pixel lines": (np.maximum(VLINE, HLINE), VLINE, HLINE),
    "1-pixel line vs black": (VLINE, VLINE, ZERO),
    "1-pixel checkerboard": (CHECKER, CHECKER, 255 - CHECKER),
}


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_degenerate_images_are_finite(case):
    f, a, b = EDGE_CASES[case]
    for profile in M.PROFILES:
        r = M.evaluate_pair(f, a, b, profile)
        assert list(r) == list(M.METRIC_NAMES)
        assert all(math.isfinite(v) for v in r.values()), r
        assert 0.0 <= r["Qabf"] <= 1.0 and -2.0 <= r["SSIM"] <= 2.0 and -1.0 <= r["CC"] <= 1.0
        assert r["EN"] >= 0 and r["SD"] >= 0 and r["MI"] >= 0 and r["MSE"] >= 0


@pytest.mark.filterwarnings("error")
def test_degenerate_documented_values():
    ev = M.evaluate_pair
    # a constant fused image: no information, no correlation
    r = ev(CONST, A, B)
    assert (r["EN"], r["SD"], r["SF"], r["AG"], r["MI"], r["CC"], r["VIF"]) == (0, 0, 0, 0, 0, 0, 0)
    assert math.copysign(1, r["EN"]) == 1  # 0.0, not -0.0
    # identical constant images: MSE 0 -> PSNR capped at 100 dB, SSIM 1 + 1, VIF 1 + 1 (0/0)
    r = ev(CONST, CONST, CONST)
    assert (r["MSE"], r["PSNR"], r["SSIM"], r["VIF"], r["MI"], r["CC"], r["SCD"]) == (0, 100, 2, 2, 0, 0, 0)
    # black everywhere: no gradient at all -> Qabf 0
    r = ev(ZERO, ZERO, ZERO)
    assert (r["Qabf"], r["PSNR"]) == (0, 100)
    # a black fused image: PSNR's peak max(F) = 0 is taken as 1 grey level
    r = ev(ZERO, A, B)
    assert r["PSNR"] == pytest.approx(10 * math.log10(1 / r["MSE"]), rel=1e-12)
    # the fused image equal to both sources
    r = ev(A, A, A)
    assert (r["MSE"], r["PSNR"], r["SCD"]) == (0, 100, 0)
    # float32 CC and SSIM of an image with itself: a few roundings of the value (1 or 2)
    assert r["CC"] == pytest.approx(1, rel=RTOL) and r["SSIM"] == pytest.approx(2, rel=RTOL)
    assert r["VIF"] == pytest.approx(2, rel=RTOL)  # float64, well within
    p = np.bincount(A.astype(int).ravel()) / A.size
    p = p[p > 0]
    assert r["MI"] == pytest.approx(-2 * np.sum(p * np.log(p)), rel=1e-9)  # float64, other order
    # the fused image equal to one source: that source's VIF is 1, its CC is 1
    r = ev(A, A, B)
    vif_a, vif_b = M._vif(A, [A, B])
    assert vif_a == pytest.approx(1, rel=RTOL) and r["VIF"] == pytest.approx(vif_a + vif_b)
    # float32 CC against float64 corrcoef: sums of products of 0..255 values lose ~log2(n) units
    # to rounding, and centring cancels (1 - CC ~ 0.1 here): 1e-5 = 84 units of the value
    assert r["CC"] == pytest.approx((1 + np.corrcoef(A.ravel(), B.ravel())[0, 1]) / 2, rel=1e-5)
    # a constant source carries no information: VIF 1 for it (the reference's NaN rule)
    assert M._vif(A, [CONST, B])[0] == 1.0


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="shape mismatch"):
        M.evaluate_pair(A, A[:-1], A)
    with pytest.raises(ValueError, match="NaN"):
        M.evaluate_pair(np.where(A > 100, np.nan, A), A, B)
    with pytest.raises(ValueError, match="2-D"):
        M.evaluate_pair(np.stack([A] * 3, -1), A, B)
    with pytest.raises(ValueError, match="smaller than 17x17"):
        M.evaluate_pair(A[:10], A[:10], B[:10])
    with pytest.raises(ValueError, match="numeric"):
        M.entropy(np.array([["a"]]))
