"""DPM-Solver++ beside DDIM, the step spacings, and the Gaussian prior whose truth is known.

* DPM-Solver++ of order 1 is DDIM with eta 0 (to float rounding), on the tiny UNet with the EM
  hook on, at 10 steps;
* with the Gaussian prior (no clamp, no EM) the probability-flow ODE has a closed form: DDIM
  converges to it at first order, DPM-Solver++(2M) at second (log-log slope about 2), and a
  wrong 2M coefficient loses the second order;
* sampler and spacing names are refused with one line, the same at every door.
Small images (32x32) throughout: each test takes a few seconds on a CPU."""
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import sample
from ddfm import Fuser, load_source
from ddfm.fusion import em_hook, initial_noise, seeded_generators
from ddfm.gaussian import build_gaussian_prior
from ddfm.config import FuseOptions
from guided_diffusion import diffusion
from guided_diffusion.diffusion import (SamplerOptions, make_schedule, sample as run_sampler,
                                        sample_dpmpp, spaced_timesteps)
from ddfm.config import ConfigError, load_diffusion_config

pytestmark = pytest.mark.numeric  # compared with reference values: rerun with other kernels in CI

EPS32 = float(np.finfo(np.float32).eps)
SIZE = 32


@pytest.fixture(scope="module")
def tiny_fuser(golden):
    return Fuser(golden / "unet_tiny.yaml", golden / "pipeline" / "small_10steps" / "diffusion_config.yaml")


@pytest.fixture(scope="module")
def pair(data_root):
    """A FLIR pair cut to 32x32, in [-1, 1] as (1, 1, H, W)."""
    def tensor(path):
        gray = load_source(path, "x").gray[100:100 + SIZE, 200:200 + SIZE]
        return torch.from_numpy(gray.astype(np.float32))[None, None] / 255 * 2 - 1
    return tensor(data_root / "FLIR" / "ir" / "FLIR_03952.jpg"), tensor(data_root / "FLIR" / "vi" / "FLIR_03952.jpg")


def test_order_one_dpm_solver_is_ddim_with_the_em_hook(tiny_fuser, pair):
    ir, vis = pair
    sched = make_schedule("linear", 1000, 10)
    x_T = initial_noise(seeded_generators([3407], "cpu"), 3, SIZE, SIZE, "cpu")
    hook, state = em_hook(ir, vis, FuseOptions())
    with torch.inference_mode():
        ddim = run_sampler(tiny_fuser.model_fn, x_T, sched, SamplerOptions(), x0_hook=hook, hook_state=state)
        dpm1 = sample_dpmpp(tiny_fuser.model_fn, x_T, sched, SamplerOptions(), order=1,
                            x0_hook=hook, hook_state=state)
    # the two updates are the same algebra with coefficients rounded differently in float32:
    # a few units of float32 resolution of the sample's scale per step, over 10 steps
    scale = float(ddim.abs().max())
    assert float((dpm1 - ddim).abs().max()) <= 10 * 8 * EPS32 * scale
    # and the second-order solver is a different method (it does move the result)
    with torch.inference_mode():
        dpm2 = sample_dpmpp(tiny_fuser.model_fn, x_T, sched, SamplerOptions(), order=2,
                            x0_hook=hook, hook_state=state)
    assert float((dpm2 - ddim).abs().max()) > 1e3 * EPS32 * scale


# --------------------------------------------------------------------------------------------
# The Gaussian prior's closed form
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gaussian():
    prior = build_gaussian_prior("linear", 1000, "cpu")
    base = make_schedule("linear", 1000, None)
    x_T = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    abar_T, abar_0 = float(base.alphas_cumprod[999]), float(base.alphas_cumprod[0])
    # every spacing runs from t = 999 to t = 0, then returns the denoised x0 at t = 0
    exact = prior.denoise(prior.ode_solution(x_T, abar_T, abar_0), torch.tensor([abar_0] * 2))
    return prior, x_T, exact


def ode_error(gaussian, sampler, steps, spacing="logsnr") -> float:
    prior, x_T, exact = gaussian
    out = run_sampler(prior, x_T, make_schedule("linear", 1000, steps, spacing=spacing),
                      SamplerOptions(sampler=sampler, clip_denoised=False))
    return float(torch.sqrt(((out.double() - exact) ** 2).mean() / (exact ** 2).mean()))


def slope(errors, steps) -> float:
    """Order of convergence: minus the least-squares slope of log error against log steps."""
    return -float(np.polyfit(np.log(steps), np.log(errors), 1)[0])


def test_gaussian_denoiser_is_consistent_with_its_ode(gaussian):
    """Along the exact ODE the denoised x0 does not depend on where it is taken from
    (x_t/sqrt(abar) - mean and its Wiener filter are both proportional to the same y)."""
    prior, x_T, _ = gaussian
    base = make_schedule("linear", 1000, None)
    abar = base.alphas_cumprod.numpy()
    x_500 = prior.ode_solution(x_T, abar[999], abar[500])
    x_100 = prior.ode_solution(x_500, abar[500], abar[100])
    direct = prior.ode_solution(x_T, abar[999], abar[100])
    # float64 throughout: agreement to a few hundred units of float64 resolution of the scale
    assert float((x_100 - direct).abs().max()) <= 1e-12 * float(direct.abs().max())


def test_ddim_converges_to_the_closed_form_at_first_order(gaussian):
    steps = [20, 40, 80]
    errors = [ode_error(gaussian, "ddim", n) for n in steps]
    assert errors[0] > errors[1] > errors[2]
    assert 0.8 <= slope(errors, steps) <= 1.3, errors
    # and with the release's uniform spacing up to all 1000 steps
    uniform = [ode_error(gaussian, "ddim", n, "uniform") for n in (25, 100, 1000)]
    assert uniform[0] > uniform[1] > uniform[2] and uniform[2] < 0.01, uniform


def test_dpm_solver_2m_converges_at_second_order(gaussian):
    steps = [20, 40, 80]
    errors = [ode_error(gaussian, "dpmpp_2m", n) for n in steps]
    assert 1.6 <= slope(errors, steps) <= 2.6, errors
    assert errors[-1] < 0.1 * ode_error(gaussian, "ddim", steps[-1])


def test_a_wrong_2m_coefficient_loses_the_second_order(gaussian, monkeypatch):
    """D = x0 + (x0 - x0_prev) / r (the 1/(2r) of Algorithm 2 doubled) is still consistent,
    so it converges, but only at first order: the slope test catches it."""
    def doubled(order, x0_history, h_history):
        if order == 1:
            return x0_history[0]
        r0 = h_history[1] / h_history[0]
        return x0_history[0] + (x0_history[0] - x0_history[1]) / r0
    monkeypatch.setattr(diffusion, "multistep_x0", doubled)
    steps = [20, 40, 80]
    errors = [ode_error(gaussian, "dpmpp_2m", n) for n in steps]
    assert not 1.6 <= slope(errors, steps) <= 2.6, errors


def test_dpm_solver_3m_beats_2m_on_log_snr_steps(gaussian):
    """3M's first two steps are of order 1 and 2 (as in the authors' code), so its global order
    is 2 in the limit; between 20 and 80 steps it is well above DDIM's 1 and more accurate than 2M."""
    steps = [20, 40, 80]
    errors_2m = [ode_error(gaussian, "dpmpp_2m", n) for n in steps]
    errors_3m = [ode_error(gaussian, "dpmpp_3m", n) for n in steps]
    assert all(e3 < 0.7 * e2 for e2, e3 in zip(errors_2m, errors_3m)), (errors_2m, errors_3m)
    assert slope(errors_3m, steps) >= 1.6, errors_3m


# --------------------------------------------------------------------------------------------
# Spacings and option checks
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spacing", ["uniform", "logsnr", "quadratic"])
@pytest.mark.parametrize("count", [2, 5, 10, 25, 100, 1000])
def test_spacings_keep_distinct_original_timesteps_from_first_to_last(spacing, count):
    abar = make_schedule("linear", 1000, None).alphas_cumprod.numpy()
    kept = spaced_timesteps(abar, count, spacing)
    assert len(kept) == count and kept[0] == 0 and kept[-1] == 999
    assert all(b > a for a, b in zip(kept, kept[1:]))


def test_uniform_spacing_is_the_release_respacing():
    assert torch.equal(make_schedule("linear", 1000, 100, spacing="uniform").timestep_map,
                       make_schedule("linear", 1000, 100).timestep_map)


def test_logsnr_spacing_is_uniform_in_log_snr():
    abar = make_schedule("linear", 1000, None).alphas_cumprod.numpy()
    kept = spaced_timesteps(abar, 10, "logsnr")
    lam = 0.5 * np.log(abar[kept] / (1 - abar[kept]))
    # integer timesteps: each lambda within half a timestep's lambda change of the uniform grid
    target = np.linspace(lam[0], lam[-1], 10)
    slack = np.abs(np.diff(0.5 * np.log(abar / (1 - abar))))
    assert np.all(np.abs(lam - target) <= np.array([slack[max(t - 1, 0)] for t in kept]) + 1e-12)


def sample_error(argv, capsys) -> str:
    assert sample.main(["--prior", "none", "--quiet", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("key, value, listed", [("sampler", "dpmpp_4m", "ddim, ddpm, dpmpp_2m, dpmpp_3m"),
                                                ("spacing", "karras", "uniform, logsnr, quadratic")])
def test_a_refused_name_gets_the_same_line_at_every_door(key, value, listed, tmp_path, capsys):
    expected = f"must be one of {listed}, got {value!r}"
    config = tmp_path / "diffusion.yaml"
    config.write_text((sample_default_config().read_text()) + f"{key}: {value}\n")
    with pytest.raises(ConfigError) as from_yaml:
        load_diffusion_config(config)
    assert str(from_yaml.value) == f"{config}: key '{key}' {expected}"
    with pytest.raises(ConfigError) as from_api:
        Fuser(prior="none", **{key: value})
    assert str(from_api.value) == f"{key} {expected}"
    line = sample_error([f"--{key}", value, "--input", str(tmp_path), "--save_dir", str(tmp_path / "o")], capsys)
    assert line.endswith(f"--{key} {expected}"), line


def sample_default_config():
    from conftest import REPO
    return REPO / "configs" / "diffusion_config.yaml"


def test_spacing_other_than_uniform_takes_a_step_count():
    with pytest.raises(ConfigError, match="spacing logsnr takes a step count"):
        Fuser(prior="none", spacing="logsnr", steps="10,5,5")
    with pytest.raises(ConfigError, match="applies to the ddim sampler only"):
        Fuser(prior="none", sampler="dpmpp_2m", eta=0.5)


def test_dpm_solver_runs_from_the_api_and_the_yaml(tmp_path, data_root):
    ir, vis = data_root / "FLIR" / "ir" / "FLIR_03952.jpg", data_root / "FLIR" / "vi" / "FLIR_03952.jpg"
    config = tmp_path / "diffusion.yaml"
    config.write_text(sample_default_config().read_text().replace("sampler: ddim", "sampler: dpmpp_2m")
                      + "spacing: logsnr\n")
    from_yaml = Fuser(diffusion_config=config, prior="gaussian", steps=5)
    from_api = Fuser(prior="gaussian", sampler="dpmpp_2m", spacing="logsnr", steps=5)
    assert from_yaml.diffusion_config == from_api.diffusion_config
    fused = from_api(ir, vis)
    assert fused.dtype == np.uint8 and fused.shape == (288, 512) and fused.std() > 10
    assert np.array_equal(fused, from_yaml(ir, vis))
    assert math.isclose(float(from_api.schedule.timestep_map[-1]), 999)
    # the same sampler reached from another fuser shares its model and gives the same output
    switched = Fuser(prior="gaussian", steps=7).with_sampler(sampler="dpmpp_2m", spacing="logsnr", steps=5)
    assert switched.diffusion_config == from_api.diffusion_config
    assert np.array_equal(switched(ir, vis), fused)


def test_sample_py_runs_dpm_solver_with_the_gaussian_prior(tmp_path, data_root):
    """The command line, without a checkpoint, writes what the API gives for the same options."""
    stem = "FLIR_03952"
    for modality in ("ir", "vi"):
        (tmp_path / "in" / modality).mkdir(parents=True)
        shutil.copy(data_root / "FLIR" / modality / f"{stem}.jpg", tmp_path / "in" / modality)
    argv = ["--prior", "gaussian", "--sampler", "dpmpp_2m", "--steps", "5", "--spacing", "quadratic",
            "--input", str(tmp_path / "in"), "--save_dir", str(tmp_path / "out"), "--quiet"]
    assert sample.main(argv) == 0
    with Image.open(tmp_path / "out" / "recon" / f"{stem}.png") as im:
        written = np.asarray(im)
    fuser = Fuser(prior="gaussian", sampler="dpmpp_2m", steps=5, spacing="quadratic")
    assert np.array_equal(written, fuser(tmp_path / "in" / "ir" / f"{stem}.jpg", tmp_path / "in" / "vi" / f"{stem}.jpg"))
