import numpy as np
import pytest
import torch

from guided_diffusion.diffusion import (SamplerOptions, make_schedule, sample, seeded_noise,
                                        space_timesteps)
from tolerance import EPS64, ulps

NAMES = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_recip_alphas_cumprod",
         "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
         "posterior_mean_coef1", "posterior_mean_coef2")
RESPACINGS = [100, 10, 1000, "25", "10,5,5", "ddim50"]


@pytest.mark.numeric
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("respacing", RESPACINGS)
def test_schedules_match_release(schedules, schedule, respacing):
    key = f"{schedule}__{respacing}__"
    sched = make_schedule(schedule, 1000, respacing)
    assert np.array_equal(sched.timestep_map.numpy(), schedules[key + "timestep_map"])
    for name in NAMES:
        ours = getattr(sched, name).numpy()
        assert ours.dtype == np.float64
        # float64, the release's operations in its order; numpy's log/sqrt kernels may differ by
        # a unit per CPU and a 1000-factor cumulative product carries it: measured 0.9 units of
        # the array's scale, a wrong beta in the 6th digit moves it by > 1e9
        assert ulps(ours, schedules[key + name], scale=max(1.0, np.abs(ours).max()), eps=EPS64) <= 64, name


def test_space_timesteps_forms():
    assert space_timesteps(1000, None) == list(range(1000))
    assert space_timesteps(1000, "") == list(range(1000))
    assert space_timesteps(1000, 10) == space_timesteps(1000, "10")
    assert space_timesteps(1000, "ddim10") == list(range(0, 1000, 100))
    with pytest.raises(ValueError):
        space_timesteps(1000, 2000)
    with pytest.raises(ValueError):
        space_timesteps(1000, "ddim999")


class _ConstantEps:
    """A stand-in network predicting eps = 0.1 and a mid-range variance, recording timesteps."""
    def __init__(self):
        self.timesteps = []

    def __call__(self, x, t):
        self.timesteps.append(t.clone())
        return torch.cat([torch.full_like(x, 0.1), torch.zeros_like(x)], dim=1)


def test_model_is_called_at_original_timesteps_and_hook_threads_state():
    sched = make_schedule("linear", 1000, 10)
    model = _ConstantEps()
    seen = []

    def hook(x0, step, state):
        seen.append((step, state))
        return x0 * 0.5, state + 1

    def watch(info):
        assert info["x0_pred"].shape == info["x_t"].shape

    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    sample(model, x_T, sched, SamplerOptions(), x0_hook=hook, hook_state=0, callback=watch)
    assert [int(t[0]) for t in model.timesteps] == sorted(sched.timestep_map.tolist(), reverse=True)
    assert all(t.shape == (2,) for t in model.timesteps)
    assert [s for s, _ in seen] == list(range(9, -1, -1))
    assert [state for _, state in seen] == list(range(10))


def test_ddim_eta_zero_is_deterministic_and_ddpm_uses_noise():
    sched = make_schedule("linear", 1000, 10)
    x_T = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a = sample(_ConstantEps(), x_T, sched, SamplerOptions())
    b = sample(_ConstantEps(), x_T, sched, SamplerOptions())
    assert torch.equal(a, b)
    noisy = [sample(_ConstantEps(), x_T, sched, SamplerOptions(sampler="ddpm"),
                    noise=seeded_noise([torch.Generator().manual_seed(s)])) for s in (1, 2)]
    assert not torch.equal(noisy[0], noisy[1])
    with pytest.raises(ValueError):
        sample(_ConstantEps(), x_T, sched, SamplerOptions(eta=0.5))
