"""metrics.toolkits / metrics.toolkit_metrics: equal to the MATLAB toolkits' own numbers --
VIFB's stored MATLAB results at every stored digit, Tang's stored MATLAB results to 1e-10
relative (the tang2022 profile all of them, tang all but the four its 2022 script computed
differently), and the toolkits' code run under Octave (tests/fixtures/toolkits/
octave_reference.json) to 1e-6 relative -- and well-behaved on bad input."""
import json
import math
import warnings

import numpy as np
import pytest

from conftest import FIXTURES, toolkit_crop
from metrics import toolkit_metrics as tm
from metrics.toolkits import TOOLKIT_PROFILES, matlab_rgb2gray, read_as_matlab

pytestmark = pytest.mark.numeric  # compared with reference values: rerun with other kernels in CI

KITS = FIXTURES / "toolkits"
# The Octave values are printed with 17 significant digits and both sides compute in float64;
# 1e-6 relative is the agreement the metrics are held to (observed: below 1e-12).
RTOL = 1e-6
# Not compared on the whole crops: Tang's SSIM is MATLAB's built-in ssim, which Octave does not
# have; FMI_dct is compared on a 20x24 corner (test_fmi_dct_equals_octave_on_corners), as
# Octave's FMI loops take about a minute per corner.
NOT_IN_OCTAVE = {"vifb": set(), "tang": {"SSIM", "FMI_dct"}}


def _same(got: float, want: float, rtol: float = RTOL) -> bool:
    if math.isnan(want) or math.isinf(want):
        return got == want or (math.isnan(got) and math.isnan(want))
    return abs(got - want) <= rtol * max(abs(want), 1e-300)


MISSING = -9999  # octave_reference.json: the reference stopped with an error


def _disagreements(case: str, got: dict, wanted: dict) -> dict:
    """{case/column: (ours, reference)} for the columns of ``wanted`` that ``_same`` refuses;
    MISSING (the reference stopped) is wanted as NaN."""
    bad = {}
    for name, want in wanted.items():
        want = math.nan if want == MISSING else want
        if not _same(got[name], want):
            bad[f"{case}/{name}"] = (got[name], want)
    return bad


@pytest.fixture(scope="module")
def vifb_matlab():
    return json.loads((KITS / "vifb" / "matlab_values.json").read_text())["values"]


@pytest.fixture(scope="module")
def octave():
    return json.loads((KITS / "octave_reference.json").read_text())["values"]


def _vifb_triple(case: str):
    image, method = case.rsplit("_", 1)
    root = KITS / "vifb"
    return (read_as_matlab(root / "fused" / method / f"{image}.jpg"),
            read_as_matlab(root / "input" / "IR" / f"{image}.jpg"),
            read_as_matlab(root / "input" / "VI" / f"{image}.jpg"))


def test_vifb_equals_matlab_stored_results_at_every_stored_digit(vifb_matlab):
    """Six fused images (two scenes, one with a grey infrared image; three methods), all 13
    metrics, against output/evaluation_metrics_single of VIFB: ours printed with MATLAB's 5
    significant digits equals the stored text."""
    profile = TOOLKIT_PROFILES["vifb"]
    bad = {}
    for case, stored in vifb_matlab.items():
        got = profile.evaluate_pair(*_vifb_triple(case))
        assert set(got) == set(stored)
        bad.update({f"{case}/{k}": (got[k], v) for k, v in stored.items()
                    if float(f"{got[k]:.5g}") != float(v)})
    assert not bad


# Tang's Metric/Metric_TNO.xlsx stores MATLAB's doubles (17 significant digits: they read back
# bit for bit), so "every stored digit" would mean bit equality, which two float64 codes that
# sum in different orders cannot give. TANG_RTOL is held instead: observed 1e-12 here (MI's sums
# of logs), 5e-12 over the whole workbook (every other metric below 5e-14), while the stored
# values of the four exceptions are never closer than 1.4e-6 to the profile's.
TANG_RTOL = 1e-10
# The workbook was written in 2022 by the analysis_Reference.m of 5d6c43a7, before the 2023
# commits the tang profile follows; these four were then computed on other image types: the
# tang2022 profile computes them so (test_tang2022_equals_matlab_stored_results).
TANG_2022_ONLY = {"SD", "SF", "VIF", "Qabf"}


@pytest.fixture(scope="module")
def tang_matlab():
    return json.loads((KITS / "tang" / "matlab_values.json").read_text())["values"]


def _tang_triple(case: str):
    image, method = case.split("_", 1)
    root = KITS / "tang"
    return tuple(read_as_matlab(root / sub / f"{image}.png")
                 for sub in (f"fused/{method}", "ir", "vi"))


def test_tang_equals_matlab_stored_results_but_for_the_2022_calls(tang_matlab):
    """Nine fused images (TNO 05, 08, 37; DenseFuse and FusionGAN grey, SeAFusion colour; colour
    sources), the 11 metrics of Tang's Metric_TNO.xlsx: EN, MI, PSNR, MSE, AG, CC and SCD equal
    the stored values to TANG_RTOL; exactly SD, SF, VIF and Qabf do not (docs/metrics.md)."""
    profile = TOOLKIT_PROFILES["tang"]
    assert len(tang_matlab) == 9
    for case, stored in tang_matlab.items():
        f, ir, vi = _tang_triple(case)
        differ = {name for name, text in stored.items()
                  if not _same(profile.metric(name, f, ir, vi), float(text), TANG_RTOL)}
        assert len(stored) == 11 and differ == TANG_2022_ONLY, case


def _assert_tang2022_gives_the_stored(got: dict, stored: dict, case: str) -> None:
    """SD bit for bit (uint8 arithmetic: integer sums), the others to TANG_RTOL."""
    bad = {name: (got[name], text) for name, text in stored.items()
           if not _same(got[name], float(text), 0.0 if name == "SD" else TANG_RTOL)}
    assert len(stored) == 11 and not bad, case


def test_tang2022_equals_matlab_stored_results(tang_matlab):
    """The tang2022 profile (the script the workbook was written with) gives all 11 stored
    values of the nine fused images, the four of TANG_2022_ONLY included: SD and VIF of the
    uint8 images, SF and Qabf of im2double's 0..1 images (below 1e-12 here, MI's sums of logs
    the largest; over the whole workbook VIF only to 2e-8, on images with large flat areas,
    whose coarse scales' variances are rounding noise). Qabf needs conv2's summation order
    (test_conv2_same_3x3_is_conv2)."""
    profile = TOOLKIT_PROFILES["tang2022"]
    assert len(tang_matlab) == 9
    for case, stored in tang_matlab.items():
        f, ir, vi = _tang_triple(case)
        _assert_tang2022_gives_the_stored({name: profile.metric(name, f, ir, vi) for name in stored},
                                          stored, case)


def test_conv2_same_3x3_is_conv2():
    """Qabf's Sobel responses: conv2(x, k, 'same') with the kernel flipped and zero padding,
    equal to scipy's convolve2d bit for bit on integer images (every order of the sums is
    exact there) and to rounding on 0..1 ones, where conv2's column-major running sum
    reproduces the workbook's Qabf (test_tang2022_equals_matlab_stored_results) and
    convolve2d's or a separable Sobel's sums do not (at least 2.7e-5 off on every image); Tang's
    sobel_fn (Nabf) is the same Sobel / 8 with mirrored borders, summed window column by window
    column."""
    from scipy.signal import convolve2d

    x = np.random.default_rng(5).integers(0, 256, (33, 41)).astype(np.float64)
    k = np.array(tm._QABF_H3)
    assert np.array_equal(tm.conv2_same_3x3(x, k), convolve2d(x, k, mode="same"))
    assert np.allclose(tm.conv2_same_3x3(x / 255, k), convolve2d(x / 255, k, mode="same"),
                       rtol=0, atol=1e-15)
    gv, gh = tm.sobel_window_sums(x)
    dx, dy = tm.sobel_xy(x, mode="mirror", scale=1 / 8)
    assert np.array_equal(gv, dx) and np.array_equal(gh, dy)


# FMI_w on the crops with flat areas: there the detail coefficients of dwt2 are constant up to
# rounding noise (~1e-13) and FMI min-max normalises each 3x3 window, so those windows' values are the noise's,
# set by the summation order of the dwt2 (here PyWavelets', there the shim's conv2; MATLAB's
# would be a third). With the shim's coefficients read back, ours equals Octave's to 1e-14 on
# these three too (docs/metrics.md). Exactly these pairs disagree.
TANG_ROUNDING_NOISE = {"constant_fused/FMI_w", "constant_source/FMI_w", "tno_saturated/FMI_w"}


@pytest.mark.parametrize("kit", ["vifb", "tang"])
def test_toolkits_equal_their_code_under_octave(kit, octave):
    """Every metric on six crops (grey and colour, odd and even sizes, a fused image with
    saturated 254/255 levels, a constant fused image, a constant source) equals the toolkit's
    own .m code run under Octave, NaN where it gives NaN; but FMI_w where flat areas make its
    wavelet features rounding noise."""
    profile = TOOLKIT_PROFILES[kit]
    bad, compared = {}, 0
    for case, kits in octave.items():
        assert set(kits[kit]) == set(profile.columns) - NOT_IN_OCTAVE[kit]
        bad.update(_disagreements(case, profile.evaluate_pair(*toolkit_crop(case)), kits[kit]))
        compared += len(kits[kit])
    assert len(octave) == 6 and set(bad) == (TANG_ROUNDING_NOISE if kit == "tang" else set()), bad
    assert compared == 6 * len(set(profile.columns) - NOT_IN_OCTAVE[kit])


# MEFB's Qc and Qy use SSIM maps with C1 = C2 = 2e-16: where a covariance is 0 in exact
# arithmetic (a flat 7x7 window of the fused image or a source, or sigma_aF = -sigma_bF), its
# float value is rounding noise (E[xy] - E[x]E[y], ~1e-13) and the sign of that noise decides
# whether Qc's weight sigma_aF / (sigma_aF + sigma_bF) is clipped to 0 or 1, so the reference's
# value is set by Octave's summation order, not by the formula (docs/metrics.md gives the
# sizes). Exactly these pairs disagree; every other one agrees to RTOL.
MEFB_ROUNDING_NOISE = {"tno_saturated/Qc", "kettle_colour/Qc", "constant_fused/Qc",
                       "constant_source/Qc", "constant_fused/Qy"}


def test_mefb_equals_its_code_under_octave(octave):
    """Every MEFB column on the crops equals metricsX(A = ir, B = vi, fused) under Octave; where
    MEFB's code stops with an error (an index error on the NaN that normalize1 makes of a
    constant image; rgb2gray of a grey image in MEF_SSIM) the profile gives NaN; the pair
    with one grey and one colour source, where most of MEFB's metrics stop, is refused."""
    profile = TOOLKIT_PROFILES["mefb"]
    bad, compared = {}, 0
    for case, kits in octave.items():
        assert set(kits["mefb"]) == set(profile.columns)
        if case == "walkingnight_grey_ir":
            assert sum(v == MISSING for v in kits["mefb"].values()) >= 15
            with pytest.raises(ValueError, match="both sources grey"):
                profile.evaluate_pair(*toolkit_crop(case))
            continue
        bad.update(_disagreements(case, profile.evaluate_pair(*toolkit_crop(case)), kits["mefb"]))
        compared += len(kits["mefb"])
    assert compared == 5 * len(profile.columns)
    assert set(bad) == MEFB_ROUNDING_NOISE, bad
    assert bad["constant_fused/Qy"][1] < 1e-15 and abs(bad["constant_fused/Qy"][0]) < 1e-9


# Liu's metricCvejic and metricYang are MEFB's Qc and Qy without the NaN filter: the same
# rounding-noise pairs, and walkingnight (flat windows in its grey infrared crop) among them.
LIU_ROUNDING_NOISE = {"kettle_colour/Qc", "constant_fused/Qc", "constant_source/Qc",
                      "walkingnight_grey_ir/Qc", "constant_fused/Qy"}


def test_liu_equals_its_code_under_octave(octave):
    """Every column of Liu's fusionAssess on the six crops (colour ones made grey with
    rgb2gray, as the profile does) equals the toolbox's code under Octave; NaN where it stops
    on the NaN that normalize1 makes of a constant image (Qmi, Qte, Qncie)."""
    profile = TOOLKIT_PROFILES["liu"]
    bad, compared = {}, 0
    for case, kits in octave.items():
        assert set(kits["liu"]) == set(profile.columns)
        bad.update(_disagreements(case, profile.evaluate_pair(*toolkit_crop(case)), kits["liu"]))
        compared += len(kits["liu"])
    assert compared == 6 * len(profile.columns)
    assert set(bad) == LIU_ROUNDING_NOISE, bad


def test_liu_qc_and_qy_keep_nan_where_mefb_drops_it(octave):
    """The one difference of Liu's Qc/Qy from MEFB's: mean2 over every window, so one 0/0
    window makes the value NaN (the saturated crop), where MEFB averages the others."""
    f, ir, vi = toolkit_crop("tno_saturated")
    assert math.isnan(octave["tno_saturated"]["liu"]["Qc"]) and math.isnan(tm.qc(ir, vi, f, drop_nan=False))
    assert math.isfinite(tm.qc(ir, vi, f))


def test_qc_rounding_noise_cases_are_those_with_cancelling_covariances():
    """The mechanism behind the Qc pairs of MEFB_ROUNDING_NOISE and LIU_ROUNDING_NOISE is in
    the data: each such case has 7x7 windows where sigma_AF, sigma_BF or their sum is 0 in
    exact arithmetic (a flat window, or the two covariances cancelling), so the sign of
    rounding noise decides whether Qc's weight sigma_AF / (sigma_AF + sigma_BF) is clipped;
    the agreeing TNO crop has none. Threshold 1e-8 grey levels^2: far above float64 rounding
    of E[xy] - E[x]E[y] at 255^2 (~1e-11), far below the other windows' values (the smallest
    seen is 9e-5)."""
    def cancelling_windows(case):
        fused, ir, vi = toolkit_crop(case)
        imgs = [ir, vi, fused]
        variants = [[matlab_rgb2gray(x) if x.ndim == 3 else x for x in imgs]]  # Liu's grey
        if imgs[2].ndim == 3 and imgs[0].ndim == imgs[1].ndim == 3:  # MEFB's channels
            variants += [[x[..., k] for x in imgs] for k in range(3)]
        count = 0
        for ir, vi, f in variants:
            s_af = tm.ssim_moments(ir, f, 7, 1.5, 2e-16, 2e-16)[3]
            s_bf = tm.ssim_moments(vi, f, 7, 1.5, 2e-16, 2e-16)[3]
            smallest = np.minimum(np.minimum(np.abs(s_af), np.abs(s_bf)), np.abs(s_af + s_bf))
            count += int(np.sum(smallest < 1e-8))
        return count
    noisy = {key.split("/")[0] for key in MEFB_ROUNDING_NOISE | LIU_ROUNDING_NOISE
             if key.endswith("/Qc")}
    assert cancelling_windows("tno_mean") == 0
    assert all(cancelling_windows(case) > 0 for case in noisy), noisy


# buildWpyr(reshape(1:35, 5, 7) .^ 1.5, 2, 'haar') under Octave 7.3 (matlabPyrTools from Liu's
# toolbox @ d6f7f1a0, corrDn.c compiled with mkoctfile --mex, run by hand as
# tools/octave_toolkit_reference.py runs it): the pyramid vector, band sizes [2 3] x 3, [1 1] x 4
BUILDWPYR_5X7 = (
    2.8258739227496275, 3.5882152896619219, 5.5895711616219401, 5.9812921964644836,
    7.3383325908547281, 7.6395443023417826, 14.694385254702503, 18.215632287631443,
    28.020351779968884, 29.965621149776439, 36.723693228151674, 38.226110068366296,
    0.99744679800343727, 0.78436771236855418, 0.50322447387828584, 0.47025536266116807,
    0.38327546881192465, 0.36816168494175727, 18.018759810500743, 92.67941895569399,
    5.1297874796113732, 142.61401604548075)


def test_haar_bands_equal_buildwpyr_on_odd_sizes():
    """Qm's pyramid is buildWpyr's, band order, orientation and sign included: on a 5 x 7 image
    the bands, stacked as MATLAB stacks them (column-major, finest first, lowpass last), equal
    the MEX code's output; the odd last row and column are dropped at each level."""
    x = (np.arange(1, 36, dtype=np.float64).reshape(7, 5).T) ** 1.5
    bands, low = tm.haar_wavelet_bands(x, 2)
    assert [b.shape for level in bands for b in level] + [low.shape] == [(2, 3)] * 3 + [(1, 1)] * 4
    got = np.concatenate([b.ravel(order="F") for level in bands for b in level] + [low.ravel()])
    assert np.allclose(got, BUILDWPYR_5X7, rtol=1e-15, atol=0)


def test_qm_ignores_the_odd_last_row_and_column_and_is_nan_for_two_flat_sources(octave):
    """metricPWW asks for even sizes and does not check: on the 75 x 93 kettle crop its value is
    that of the 74 x 92 image (Octave gives the same for both), and ours is too. Two constant
    sources give 0/0 = NaN, as metricPWW does under Octave, without a warning."""
    f, ir, vi = (matlab_rgb2gray(x) for x in toolkit_crop("kettle_colour"))
    assert f.shape == (75, 93)
    whole = tm.qm_pww(ir, vi, f)
    assert whole == tm.qm_pww(ir[:-1, :-1], vi[:-1, :-1], f[:-1, :-1])
    assert _same(whole, octave["kettle_colour"]["liu"]["Qm"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(tm.qm_pww(np.full((40, 48), 7.0), np.full((40, 48), 9.0), f[:40, :48]))


def test_fmi_dct_equals_octave_on_corners(octave):
    """Tang's FMI_dct (analysis_fmi(ir, vi, fused, 'dct')) on the top-left 20x24 corner of four
    cases, a constant fused image among them."""
    cases = [c for c in octave if "tang_corner" in octave[c]]
    assert len(cases) == 4 and "constant_fused" in cases
    for case in cases:
        f, ir, vi = (matlab_rgb2gray(x)[:20, :24] if x.ndim == 3 else x[:20, :24]
                     for x in toolkit_crop(case))
        want = octave[case]["tang_corner"]["FMI_dct"]
        # FMI lies in 0..1, so 1e-6 of that scale: a constant fused image gives rounding noise
        # of the DCT (2e-18 in Octave, 2e-17 here) where the value is 0 at that scale
        assert abs(tm.fmi(ir, vi, f, "dct") - want) <= RTOL * max(abs(want), 1.0), case


# Tang's 2022 script under Octave on the crops: two kinds of values are set by rounding, not by
# the formula. Qabf on im2double's 0..1 data: which pixels have exactly gA == gF (the quirk's
# ratio g_F) depends on the order of conv2's sums; MATLAB's order is pinned by the workbook
# (test_tang2022_equals_matlab_stored_results), and Octave's conv2 sums in another, moving Qabf
# by 1e-3 to 4.4e-3 relative on these crops. The constant fused image's CC: F - mean(F) is 0 in
# exact arithmetic, NaN (0/0) here; Octave's mean of the 0..1 constant rounds, and it reports the
# correlation of that rounding noise (-0.73).
TANG2022_OCTAVE_ROUNDING = {f"{case}/Qabf" for case in ("tno_mean", "tno_saturated", "kettle_colour",
                                                        "walkingnight_grey_ir", "constant_fused",
                                                        "constant_source")} | {"constant_fused/CC"}


def test_tang2022_equals_the_2022_script_under_octave(octave):
    """Every tang2022 column but FMI on the six crops equals the 2022 analysis_Reference.m
    (5d6c43a7) under Octave: its easy = 1 outputs, and Nabf, SSIM and MS_SSIM as its easy = 0
    branch calls them -- but for TANG2022_OCTAVE_ROUNDING. Nabf agrees only with sobel_fn's
    summation order (on 0..1 data ties of gF > gA depend on it)."""
    profile = TOOLKIT_PROFILES["tang2022"]
    bad, compared = {}, 0
    for case, kits in octave.items():
        assert set(kits["tang2022"]) == set(profile.columns) - {"FMI_pixel", "FMI_dct", "FMI_w"}
        bad.update(_disagreements(case, profile.evaluate_pair(*toolkit_crop(case)), kits["tang2022"]))
        compared += len(kits["tang2022"])
    assert compared == 6 * 14 and set(bad) == TANG2022_OCTAVE_ROUNDING, bad
    assert all(abs(g - w) < 5e-3 * w for k, (g, w) in bad.items() if k.endswith("Qabf"))
    assert math.isnan(bad["constant_fused/CC"][0])


def test_tang2022_fmi_equals_octave_on_a_corner(octave):
    """FMI_dct and FMI_w of the 2022 call (analysis_fmi on im2double images) on the top-left
    20x24 corner of the TNO crop."""
    f, ir, vi = (x[:20, :24] for x in toolkit_crop("tno_mean"))
    want = octave["tno_mean"]["tang2022_corner"]
    assert set(want) == {"FMI_dct", "FMI_w"}
    for name, value in want.items():
        assert _same(TOOLKIT_PROFILES["tang2022"].metric(name, f, ir, vi), value), name


def test_tang2022_shares_the_unchanged_calls_with_tang():
    """EN, MI, PSNR, MSE, AG and MS_SSIM are the same calls on the same doubles in both scripts
    (im2double(x) * 255 is x for every uint8 x): equal bit for bit. CC, SCD, FMI_dct and FMI_w
    are scale-free formulas the 2022 script ran on 0..1 data: equal to rounding on crops without
    flat areas (where flat areas make wavelet coefficients rounding noise, FMI_w differs)."""
    for case in ("tno_mean", "kettle_colour", "walkingnight_grey_ir"):
        old, new = (TOOLKIT_PROFILES[k].evaluate_pair(*toolkit_crop(case)) for k in ("tang", "tang2022"))
        for name in ("EN", "MI", "PSNR", "MSE", "AG", "MS_SSIM"):
            assert new[name] == old[name], (case, name)
        for name in ("CC", "SCD", "FMI_dct", "FMI_w"):
            assert _same(new[name], old[name], 1e-12), (case, name)


def test_octave_cases_cover_what_they_claim(octave):
    """The degenerate cases really are degenerate, and the saturated case holds 254 and 255."""
    def load(case, role):
        return read_as_matlab(KITS / "crops" / f"{case}_{role}.png")
    assert np.ptp(load("constant_fused", "fused")) == 0
    assert np.ptp(load("constant_source", "ir")) == 0
    sat = load("tno_saturated", "fused")
    assert (sat == 255).any() and (sat == 254).any() and np.ptp(sat) > 0
    assert load("kettle_colour", "fused").ndim == 3 and load("walkingnight_grey_ir", "ir").ndim == 2
    assert math.isnan(octave["constant_fused"]["vifb"]["Qcb"])


# --------------------------------------------------------------------------------------------
# conventions, each checked against a direct transcription of the MATLAB loop


def test_tang_mi_saturates_254_and_255_into_one_joint_bin():
    """Tang's Hab indexes uint8 + 1: levels 254 and 255 of either image share a bin, so an
    image pair differing only in 254 vs 255 has MI = H(src) + H(F) - H(src) < 2 H(F)."""
    rng = np.random.default_rng(0)
    src = rng.choice([254.0, 255.0], size=(40, 40))
    mi_self = tm.mutual_information_saturated(src, src)
    h = tm.entropy(src)
    assert h > 0.9  # two nearly equiprobable levels
    assert mi_self == pytest.approx(2 * h, rel=1e-12)  # joint entropy 0: one saturated bin


def test_vifb_rmse_is_root_sse_over_pixels():
    a = np.zeros((40, 50))
    f = np.full((40, 50), 2.0)
    assert tm.vifb_rmse_term(a, f) == pytest.approx(math.sqrt(4.0 * 2000) / 2000, rel=1e-15)


def test_average_gradient_denominators():
    f = np.add.outer(np.arange(40.0), 2 * np.arange(50.0))  # gx = 2, gy = 1 everywhere
    s = math.sqrt((4 + 1) / 2) * 2000
    assert tm.average_gradient(f, "(r-1)(c-1)") == pytest.approx(s / (39 * 49), rel=1e-14)
    assert tm.average_gradient(f, "rc") == pytest.approx(s / 2000, rel=1e-14)


def test_block_reduce_counts_zero_padding_like_blkproc():
    x = np.ones((20, 20))
    means = tm.block_reduce(x, 16, "mean")
    assert means.shape == (2, 2)
    assert means[0, 0] == 1.0 and means[1, 1] == 16 / 256  # a 4x4 corner in a 16x16 block


def test_matlab_rgb2gray_rounds_halves_away_from_zero():
    rgb = np.zeros((2, 2, 3))
    rgb[0, 0] = (255, 255, 255)
    assert matlab_rgb2gray(rgb)[0, 0] == 255.0
    assert tm.round_half_away(np.array([0.5, 1.5, 2.5, -0.5])).tolist() == [1, 2, 3, -1]


def test_matlab_edge_keeps_the_right_pixel_of_a_tied_step():
    """MATLAB's thinning compares b(r, c-1) <= b < ... > b(r, c+1): of the two equal gradient
    columns either side of a vertical step, only the right one is an edge; a step whose
    gradient is exactly the automatic cutoff (4 x mean) is no edge at all."""
    step = np.zeros((12, 16))
    step[:, 8:] = 100.0
    edges = tm.matlab_edge(step)
    assert edges[:, 8].all() and edges.sum() == 12  # column 9 (MATLAB's 1-based) only
    narrow = np.zeros((12, 8))
    narrow[:, 4:] = 100.0  # b = 2500 on two of 8 columns: cutoff 4 * 625 = 2500, not above
    assert tm.matlab_edge(narrow).sum() == 0


def _matlab_dwt2_steps(x, lo, hi):
    """MATLAB's dwt2 as its code does it: extend the columns symmetrically (half-point) by
    lf-1, convolve each row ('valid'), keep columns 2:2:end; then the same down the columns."""
    ext = len(lo) - 1

    def down(z, filt):
        z = np.pad(z[:, 1::2], ((ext, ext), (0, 0)), mode="symmetric")
        z = np.apply_along_axis(np.convolve, 0, z, filt, "valid")
        return z[1::2, :]

    y = np.pad(x, ((0, 0), (ext, ext)), mode="symmetric")
    rows_lo = np.apply_along_axis(np.convolve, 1, y, lo, "valid")
    rows_hi = np.apply_along_axis(np.convolve, 1, y, hi, "valid")
    return down(rows_lo, lo), down(rows_lo, hi), down(rows_hi, lo), down(rows_hi, hi)


@pytest.mark.parametrize("shape", [(64, 80), (67, 93), (40, 45)])
def test_dmey_feature_is_matlabs_dwt2(shape):
    """FMI_w's feature: PyWavelets' dwt2('dmey', 'symmetric') equals MATLAB's dwt2 steps (a
    size below the 62-tap filter included: the extension then reflects more than once), and
    the blocks are laid out as [cA, cH; cV, cD], reranged to 0..1."""
    import pywt

    x = np.random.default_rng(3).integers(0, 256, shape).astype(np.float64)
    w = pywt.Wavelet("dmey")
    a, h, v, d = _matlab_dwt2_steps(x, np.array(w.dec_lo), np.array(w.dec_hi))
    assert a.shape == ((shape[0] + 61) // 2, (shape[1] + 61) // 2)
    block = np.block([[a, h], [v, d]])
    want = (block - block.min()) / (block.max() - block.min())
    assert np.abs(tm.dmey_feature(x) - want).max() < 1e-12


def test_flat_areas_leave_only_rounding_noise_in_the_wavelet_details():
    """Why FMI_w of flat areas is noise: a constant image's dwt2 detail bands are constant in
    exact arithmetic (the dmey high-pass taps sum to 1.1e-3, not 0) but vary by ~1e-13, which
    FMI's per-window min-max blows up to 0..1."""
    import pywt

    _, details = pywt.dwt2(np.full((64, 80), 255.0), "dmey", mode="symmetric")
    for band in details:
        assert 0 < np.ptp(band) < 1e-12 * 255 and np.unique(band).size > 9


def test_shared_results_compute_a_metric_once_per_content(monkeypatch):
    """Within shared_results, MEFB's and Liu's tables of one pair compute Qp's three phase
    congruencies once (not twice) and the edge FMI once for MEFB and Tang, also on copies of
    equal content; the values are bit for bit those of separate calls. Outside, nothing is
    remembered."""
    f, ir, vi = toolkit_crop("tno_mean")
    alone = {k: TOOLKIT_PROFILES[k].evaluate_pair(f, ir, vi) for k in ("mefb", "liu", "tang")}
    calls = []
    pc = tm.phase_congruency
    monkeypatch.setattr(tm, "phase_congruency", lambda img: calls.append(1) or pc(img))
    features = []
    edge = tm.FMI_FEATURES["edge"]
    monkeypatch.setitem(tm.FMI_FEATURES, "edge", lambda img: features.append(1) or edge(img))
    with tm.shared_results():
        shared = {k: TOOLKIT_PROFILES[k].evaluate_pair(f.copy(), ir.copy(), vi.copy())
                  for k in ("mefb", "liu", "tang")}
    assert len(calls) == 3 and len(features) == 3
    for k in alone:
        assert json.dumps(shared[k]) == json.dumps(alone[k]), k
    TOOLKIT_PROFILES["liu"].evaluate_pair(f, ir, vi)
    assert len(calls) == 6


def test_fmi_of_identical_images_is_one_and_features_are_named():
    rng = np.random.default_rng(4)
    src = rng.integers(0, 256, (40, 44)).astype(np.float64)
    for feature in tm.FMI_FEATURES:
        assert tm.fmi(src, src, src, feature) == 1.0
    with pytest.raises(ValueError, match="use one of none, edge, dct, wavelet"):
        tm.fmi(src, src, src, "gradient")


# --------------------------------------------------------------------------------------------
# bad input: one-line errors, or the reference's value without warnings


@pytest.mark.parametrize("kit", ["vifb", "tang", "tang2022", "mefb", "liu"])
def test_bad_inputs_give_one_line_errors(kit):
    p = TOOLKIT_PROFILES[kit]
    img = np.full((40, 40), 100.0)
    cases = [
        ((np.zeros((40, 41)), img, img), "size mismatch"),
        ((np.full((40, 40), np.nan), img, img), "NaN"),
        ((np.full((40, 40), 300.0), img, img), "outside 0..255"),
        ((np.zeros((40, 40, 4)), img, img), "grey (H, W) or colour (H, W, 3)"),
        ((np.zeros((8, 8)), np.zeros((8, 8)), np.zeros((8, 8))), "smaller than"),
    ]
    for args, words in cases:
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")) as exc:
            p.evaluate_pair(*args)
        assert "\n" not in str(exc.value)


@pytest.mark.parametrize("kit", ["vifb", "tang", "tang2022", "mefb", "liu"])
def test_constant_images_give_values_without_warnings(kit):
    rng = np.random.default_rng(1)
    src = rng.integers(0, 256, (48, 48)).astype(np.float64)
    const = np.full((48, 48), 128.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = TOOLKIT_PROFILES[kit].evaluate_pair(const, src, const)
    assert set(got) == set(TOOLKIT_PROFILES[kit].columns)


def test_colour_fused_with_grey_sources_is_channel_by_channel():
    """VIFB measures a colour fused image channel by channel: three equal channels give the
    grey value for every metric except SF, which sees the channels side by side."""
    rng = np.random.default_rng(2)
    ir, vi, f = (rng.integers(0, 256, (40, 48)).astype(np.float64) for _ in range(3))
    p = TOOLKIT_PROFILES["vifb"]
    grey = p.evaluate_pair(f, ir, vi)
    colour = p.evaluate_pair(np.repeat(f[..., None], 3, axis=2), ir, vi)
    for k in p.columns:
        if k != "SF":
            assert colour[k] == pytest.approx(grey[k], rel=1e-12), k
    wide = np.concatenate([f, f, f], axis=1)
    assert colour["SF"] == pytest.approx(tm.spatial_frequency(wide, "mn"), rel=1e-15)


# --------------------------------------------------------------------------------------------
# evaluate.py --profile vifb|mefb|liu|tang


def test_evaluate_py_prints_the_vifb_table_from_folders(tmp_path, vifb_matlab, capsys):
    """evaluate.py over the VIFB fixture folders gives, per image, MATLAB's stored values, and
    the table's columns in VIFB's order."""
    import evaluate
    root = KITS / "vifb"
    out = tmp_path / "vifb.json"
    rc = evaluate.main(["--input", str(root / "input"), "--modalities", "IR,VI", "--profile", "vifb",
                        "--fused", str(root / "fused" / "ADF"), "--fused", str(root / "fused" / "GFCE"),
                        "--quiet", "--json", str(out)])
    assert rc == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("Method"))
    assert header.split()[1:14] == list(TOOLKIT_PROFILES["vifb"].columns)
    doc = json.loads(out.read_text())
    for method in ("ADF", "GFCE"):
        entry = doc["methods"][method]
        assert entry["count"] == 2
        for image, vals in entry["per_image"].items():
            stored = vifb_matlab[f"{image}_{method}"]
            assert {k: float(f"{v:.5g}") for k, v in vals.items()} == \
                {k: float(v) for k, v in stored.items()}


def test_evaluate_py_tang_profile_reads_grey_as_matlab(tmp_path):
    """--profile tang reads colour files through MATLAB's rgb2gray: the table's EN is the
    entropy of the rgb2gray image."""
    import evaluate
    root = KITS / "vifb"
    out = tmp_path / "tang.json"
    assert evaluate.main(["--input", str(root / "input"), "--modalities", "IR,VI", "--profile", "tang",
                          "--fused", str(root / "fused" / "SeAFusion"), "--quiet", "--json", str(out)]) == 0
    got = json.loads(out.read_text())["methods"]["SeAFusion"]["per_image"]["kettle"]
    grey = matlab_rgb2gray(read_as_matlab(root / "fused" / "SeAFusion" / "kettle.jpg"))
    assert got["EN"] == pytest.approx(tm.entropy(grey), rel=1e-15)
    assert set(got) == set(TOOLKIT_PROFILES["tang"].columns)


def test_evaluate_py_tang2022_profile_gives_the_stored_matlab_values(tmp_path, tang_matlab, capsys):
    """evaluate.py --profile tang2022 over the Tang fixture folders (SeAFusion's colour fused
    images, colour sources) prints the 2022 script's 17 columns in its order, and its JSON
    holds the workbook's 11 stored values of each image."""
    import evaluate
    from metrics.toolkits import TANG2022_COLUMNS
    root = KITS / "tang"
    out = tmp_path / "tang2022.json"
    assert evaluate.main(["--input", str(root), "--modalities", "ir,vi", "--profile", "tang2022",
                          "--fused", str(root / "fused" / "SeAFusion"), "--quiet",
                          "--json", str(out)]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("Method"))
    assert header.split()[1:18] == list(TANG2022_COLUMNS)
    per_image = json.loads(out.read_text())["methods"]["SeAFusion"]["per_image"]
    assert sorted(per_image) == ["05", "08", "37"]
    for image, got in per_image.items():
        assert list(got) == list(TANG2022_COLUMNS)
        _assert_tang2022_gives_the_stored(got, tang_matlab[f"{image}_SeAFusion"], image)


def test_tang_ssim_equals_a_loop_transcription_of_matlabs_documented_ssim():
    """MATLAB's built-in ssim (which Octave lacks, so no reference run exists): per pixel, an
    11x11 Gaussian (sd 1.5) with replicated borders, C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = 1
    for double images, mean of the same-size map (as its ssim.m source does it). Checked
    against that algorithm written as a loop on a 20x24 image (float64 sums of 121 terms: 1e-12 relative covers their rounding)."""
    rng = np.random.default_rng(3)
    x, y = (rng.integers(0, 256, (20, 24)).astype(np.float64) for _ in range(2))
    k = np.arange(-5, 6)
    w = np.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / (2 * 1.5 ** 2))
    w /= w.sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    xp, yp = np.pad(x, 5, mode="edge"), np.pad(y, 5, mode="edge")
    vals = []
    for i in range(20):
        for j in range(24):
            px, py = xp[i:i + 11, j:j + 11], yp[i:i + 11, j:j + 11]
            mx, my = np.sum(w * px), np.sum(w * py)
            sx, sy = np.sum(w * px * px) - mx * mx, np.sum(w * py * py) - my * my
            sxy = np.sum(w * px * py) - mx * my
            vals.append((2 * mx * my + c1) * (2 * sxy + c2) / ((mx * mx + my * my + c1) * (sx + sy + c2)))
    assert tm.ssim_gaussian(x, y, 1.0, "replicate") == pytest.approx(np.mean(vals), rel=1e-12)


def test_nabf_argument_order_matters():
    """Tang's script reports analysis_nabf(ir, vi, fused); the function means (fused, ir, vi).
    The mean of two images adds no artefacts (Nabf below 1e-5 on the TNO crop), while the
    script's order reports more than 0.01 for it."""
    f, ir, vi = toolkit_crop("tno_mean")
    assert tm.nabf(f, ir, vi) < 1e-5
    assert tm.nabf(ir, vi, f) > 0.01


def test_evaluate_py_mefb_profile_refuses_mixed_sources_and_measures_the_rest(tmp_path, capsys):
    """--profile mefb over the VIFB fixture folders: kettle (both sources colour) gets MEFB's
    columns, equal to the profile called directly; walkingnight (grey infrared, colour visible),
    which MEFB's code cannot measure, is reported in one line and left out."""
    import evaluate
    root = KITS / "vifb"
    out = tmp_path / "mefb.json"
    rc = evaluate.main(["--input", str(root / "input"), "--modalities", "IR,VI", "--profile", "mefb",
                        "--fused", str(root / "fused" / "SeAFusion"), "--quiet", "--json", str(out)])
    printed = capsys.readouterr()
    per_image = json.loads(out.read_text())["methods"]["SeAFusion"]["per_image"]
    assert rc == 0 and set(per_image) == {"kettle"}
    assert "walkingnight" in printed.out + printed.err
    assert "both sources grey" in printed.out + printed.err
    f, ir, vi = (read_as_matlab(root / sub / "kettle.jpg")
                 for sub in ("fused/SeAFusion", "input/IR", "input/VI"))
    assert per_image["kettle"]["NMI"] == TOOLKIT_PROFILES["mefb"].metric("NMI", f, ir, vi)
    assert list(per_image["kettle"]) == list(TOOLKIT_PROFILES["mefb"].columns)


def test_mefb_grey_sources_with_colour_fused_take_its_red_channel():
    """MEFB's wrappers replace a colour fused image by fused(:,:,1) when both sources are grey
    (every metric but AG, which takes rgb2gray of the double image, unrounded, and MEF_SSIM,
    which cannot run on grey sources): the colour pair's values equal the grey pair's with the
    red channel, and differ from the green one's (the channels differ)."""
    rng = np.random.default_rng(4)
    ir, vi = (rng.integers(0, 256, (40, 48)).astype(np.float64) for _ in range(2))
    f = rng.integers(0, 256, (40, 48, 3)).astype(np.float64)
    p = TOOLKIT_PROFILES["mefb"]
    colour, red, green = (p.evaluate_pair(x, ir, vi) for x in (f, f[..., 0], f[..., 1]))
    for name in p.columns:
        if name in ("AG", "MEF_SSIM"):
            continue
        assert _same(colour[name], red[name], 1e-15), name
    assert colour["NMI"] != green["NMI"]
    weighted = 0.298936021293775 * f[..., 0] + 0.587043074451121 * f[..., 1] + 0.114020904255103 * f[..., 2]
    assert colour["AG"] == pytest.approx(tm.average_gradient(weighted), rel=1e-15)
    assert math.isnan(colour["MEF_SSIM"])


def test_viff_is_nan_where_its_coarsest_scale_is_empty():
    """MEFB's metricsVIF on the first 40 and 41 rows of the TNO crop under Octave 7.3
    (MEFB @ 9e185bf8, run by hand as tools/octave_toolkit_reference.py runs it): 40 rows leave
    the 4th scale no window, sum([]) / sum([]) = NaN; 41 rows give 0.49957873160470123."""
    f, ir, vi = toolkit_crop("tno_mean")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(tm.viff(ir[:40], vi[:40], f[:40]))
    assert _same(tm.viff(ir[:41], vi[:41], f[:41]), 0.49957873160470123)
