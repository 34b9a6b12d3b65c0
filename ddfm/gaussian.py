"""``--prior gaussian``: DDFM with the stationary Gaussian image prior of
:mod:`guided_diffusion.gaussian_prior` in the UNet's place. Its exact denoiser needs no
checkpoint and works at any image size; the statistics ship in ``models/gaussian_prior.npz``
(fitted by ``python -m tools.fit_gaussian_prior`` on the bundled pairs)."""
from __future__ import annotations

from pathlib import Path

import torch

from guided_diffusion.diffusion import make_schedule
from guided_diffusion.gaussian_prior import GaussianPrior

GAUSSIAN_PRIOR_STATS = Path(__file__).resolve().parents[1] / "models" / "gaussian_prior.npz"


def build_gaussian_prior(noise_schedule: str, steps: int, device,
                         stats_path=GAUSSIAN_PRIOR_STATS) -> GaussianPrior:
    """The Gaussian prior as the sampler's model for the base process (``noise_schedule`` over
    ``steps`` original timesteps), returning eps and the variance channels of a learn_sigma UNet."""
    base = make_schedule(noise_schedule, steps, None, device=torch.device("cpu"))
    model = GaussianPrior.load(stats_path, base.alphas_cumprod.numpy(), learn_sigma=True)
    model.alphas_cumprod = model.alphas_cumprod.to(device)
    return model
