"""End to end: sample.py against the released code's pipeline runs (golden/pipeline)."""
import numpy as np
import pytest
from PIL import Image

import sample
from guided_diffusion.diffusion import make_schedule
from tolerance import ulps

pytestmark = pytest.mark.numeric

# Trace bounds in units of float32 resolution of each step's largest |value|, times the first
# step's amplification: x0 = sqrt(1/abar) x_t - sqrt(1/abar - 1) eps multiplies the UNet's
# float32 rounding (a few units) by sqrt(1/abar_T) = 157 there, and that error is carried through
# every later step. Measured (in these amplified units, AVX2 / scalar / 1-thread kernels):
# pred_xstart 7.1/15.7/5.1, em_f_pre 11.0/12.7/8.3, em_F 3.0/12.9/6.3, sample 0.8/1.0/1.0,
# x 0.5/0.7/0.7; bounds 3-4x above that. x_t and the sample take x0's error times the posterior
# coefficient (< 1), hence their smaller bound.
TRACE_BOUNDS = {"sample": 4, "x": 4, "pred_xstart": 48, "em_f_pre": 48, "em_F": 48}


def run_sample(golden, case, save_dir, *extra):
    case_dir = golden / "pipeline" / case
    argv = ["--model_config", str(golden / "unet_tiny.yaml"),
            "--diffusion_config", str(case_dir / "diffusion_config.yaml"),
            "--input", str(case_dir / "input"), "--save_dir", str(save_dir), "--quiet", *extra]
    return sample.main(argv)


def assert_png_close(ours_path, ref_path, min_identical=0.999):
    ours = np.asarray(Image.open(ours_path)).astype(int)
    ref = np.asarray(Image.open(ref_path)).astype(int)
    assert ours.shape == ref.shape, (ours_path, ours.shape, ref.shape)
    # 8-bit outputs: the float error above can flip the rounding of a few pixels by one grey level
    identical = (ours == ref).mean()
    assert identical >= min_identical, (ours_path, identical)
    assert np.abs(ours - ref).max() <= 1, ours_path


@pytest.fixture(scope="module")
def small_run(golden, tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    assert run_sample(golden, "small_10steps", out, "--record", "--trace") == 0
    return out


def test_small_trace_matches_release_every_step(small_run, small_trace):
    with np.load(small_run / "trace" / "crop_03952.npz") as ours:
        ours = dict(ours)
    steps = sorted({k.split("__")[0] for k in small_trace})
    assert len(steps) == 10
    amplification = make_schedule("linear", 1000, 10).sqrt_recip_alphas_cumprod.max().item()
    for step in steps:
        assert int(ours[f"{step}__t"][0]) == int(small_trace[f"{step}__t"][0])
        for key, bound in TRACE_BOUNDS.items():
            a, b = ours[f"{step}__{key}"], small_trace[f"{step}__{key}"]
            assert a.shape == b.shape, (step, key)
            error = ulps(a, b, scale="max") / amplification
            assert error <= bound, (step, key, error)


def test_small_recon_and_progress_pngs(small_run, golden):
    ref = golden / "pipeline" / "small_10steps"
    assert_png_close(small_run / "recon" / "crop_03952.png", ref / "recon" / "crop_03952.png")
    progress = sorted((ref / "progress" / "crop_03952").glob("*.png"))
    assert len(progress) == 10
    for ref_png in progress:
        assert_png_close(small_run / "progress" / "crop_03952" / ref_png.name, ref_png)
    assert sorted(p.name for p in (small_run / "progress" / "crop_03952").iterdir()) == [p.name for p in progress]


def test_flir_10steps_recon_pngs(golden, tmp_path):
    assert run_sample(golden, "flir_10steps", tmp_path) == 0
    refs = sorted((golden / "pipeline" / "flir_10steps" / "recon").glob("*.png"))
    assert len(refs) == 3
    for ref_png in refs:
        assert_png_close(tmp_path / "recon" / ref_png.name, ref_png)
    assert not list((tmp_path / "recon").glob(".*")), "temporary files left behind"


@pytest.mark.slow
def test_flir_100steps_recon_pngs(golden, tmp_path):
    assert run_sample(golden, "flir_100steps", tmp_path) == 0
    for ref_png in sorted((golden / "pipeline" / "flir_100steps" / "recon").glob("*.png")):
        assert_png_close(tmp_path / "recon" / ref_png.name, ref_png)
