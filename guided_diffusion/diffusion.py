"""Noise schedules, timestep respacing and the DDFM sampler loops.

A sampler here is a plain function of a model, x_T and a :class:`Schedule`; its state lives in
loop variables. Two extension points, kept apart:

* ``x0_hook(x0_pred, step, hook_state) -> (x0_pred, hook_state)`` *changes* the x0 estimate
  (DDFM's EM fusion step is one); its state is threaded through the loop.
* ``callback(info)`` only *observes* (progress images, traces, logging).

Step order is DDFM's: UNet -> x0 -> clamp -> x0_hook -> eps recomputed from x0 -> update.
Coefficients are float64 tensors on the device, computed once, and used in float32, as the
release does (``extract_and_expand`` takes float64 numpy values and calls ``.float()``).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch

SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddim", "ddpm")
MEAN_TYPES = ("epsilon", "start_x", "previous_x")
VAR_TYPES = ("learned_range", "learned", "fixed_small", "fixed_large")


# --------------------------------------------------------------------------------------------
# Schedules and respacing
# --------------------------------------------------------------------------------------------

def named_beta_schedule(name: str, num_steps: int) -> np.ndarray:
    """Betas (float64) of a named schedule: "linear" (Ho et al., scaled to num_steps) or
    "cosine" (Nichol & Dhariwal, betas capped at 0.999)."""
    if name == "linear":
        scale = 1000 / num_steps
        return np.linspace(scale * 0.0001, scale * 0.02, num_steps, dtype=np.float64)
    if name == "cosine":
        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.array([min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), 0.999)
                         for i in range(num_steps)], dtype=np.float64)
    raise ValueError(f"unknown noise_schedule {name!r}: use one of {', '.join(SCHEDULES)}")


def space_timesteps(num_steps: int, respacing) -> list[int]:
    """Original timesteps kept by a respacing, ascending (guided-diffusion's rule).

    ``respacing``: an int (that many steps, evenly strided over the whole process), a string of
    comma-separated section counts ("10,5,5": the process cut into equal sections, each strided
    to its count), "ddimN" (the DDIM paper's fixed integer stride), or empty/None (all steps).
    """
    if respacing is None or respacing == "" or respacing == []:
        return list(range(num_steps))
    if isinstance(respacing, str):
        text = respacing.strip()
        if text.startswith("ddim"):
            desired = int(text[len("ddim"):])
            for stride in range(1, num_steps):
                if len(range(0, num_steps, stride)) == desired:
                    return list(range(0, num_steps, stride))
            raise ValueError(f"cannot take exactly {desired} steps of {num_steps} with an integer stride")
        sections = [int(part) for part in text.split(",")]
    elif isinstance(respacing, int):
        sections = [respacing]
    else:
        sections = [int(part) for part in respacing]

    size_per, extra = divmod(num_steps, len(sections))
    start, kept = 0, []
    for i, count in enumerate(sections):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide a section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            kept.append(start + round(position))
            position += stride
        start += size
    return sorted(set(kept))


@dataclass(frozen=True)
class Schedule:
    """A respaced diffusion process: float64 coefficient tensors indexed by the respaced step
    (0 = least noisy), and ``timestep_map`` giving the original timestep the model expects."""
    timestep_map: torch.Tensor          # int64 (T,)
    original_num_steps: int
    betas: torch.Tensor
    alphas_cumprod: torch.Tensor
    alphas_cumprod_prev: torch.Tensor
    sqrt_recip_alphas_cumprod: torch.Tensor
    sqrt_recipm1_alphas_cumprod: torch.Tensor
    posterior_variance: torch.Tensor
    posterior_log_variance_clipped: torch.Tensor
    posterior_mean_coef1: torch.Tensor
    posterior_mean_coef2: torch.Tensor

    @property
    def num_steps(self) -> int:
        return int(self.timestep_map.shape[0])

    def to(self, device) -> "Schedule":
        return Schedule(**{name: (value.to(device) if torch.is_tensor(value) else value)
                           for name, value in self.__dict__.items()})


def _process_arrays(betas: np.ndarray) -> dict:
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas, axis=0)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    return dict(
        betas=betas,
        alphas_cumprod=alphas_cumprod,
        alphas_cumprod_prev=alphas_cumprod_prev,
        sqrt_recip_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod),
        sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod - 1),
        posterior_variance=posterior_variance,
        # clipped: the posterior variance is 0 at the first step of the chain
        posterior_log_variance_clipped=np.log(np.append(posterior_variance[1], posterior_variance[1:])),
        posterior_mean_coef1=betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        posterior_mean_coef2=(1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
    )


def make_schedule(noise_schedule: str = "linear", steps: int = 1000, timestep_respacing=None,
                  device="cpu") -> Schedule:
    """Build the respaced process once, as tensors on ``device``."""
    base_betas = named_beta_schedule(noise_schedule, steps)
    kept = space_timesteps(steps, timestep_respacing)
    base_alphas_cumprod = np.cumprod(1.0 - base_betas)
    # Respaced betas reproduce the kept alpha_bar values: beta_i = 1 - abar_i / abar_prev.
    new_betas, last = [], 1.0
    for t in kept:
        new_betas.append(1 - base_alphas_cumprod[t] / last)
        last = base_alphas_cumprod[t]
    arrays = _process_arrays(np.array(new_betas, dtype=np.float64))
    tensors = {name: torch.from_numpy(value).to(device=device, dtype=torch.float64)
               for name, value in arrays.items()}
    return Schedule(timestep_map=torch.tensor(kept, dtype=torch.int64, device=device),
                    original_num_steps=steps, **tensors)


# --------------------------------------------------------------------------------------------
# Model output -> x0, variance
# --------------------------------------------------------------------------------------------

def dynamic_threshold_release(x0: torch.Tensor, quantile: float = 0.95) -> torch.Tensor:
    """The release's dynamic thresholding: x0 *multiplied* by the per-image 95th percentile of
    |x0| (Imagen divides by it, after flooring it at 1), then clipped to [-1, 1]. Kept as
    released; per image so that batches do not mix."""
    flat = x0.abs().reshape(x0.shape[0], -1).float()
    scale = torch.quantile(flat, quantile, dim=1).view(-1, *([1] * (x0.dim() - 1)))
    return torch.clip(x0 * scale.to(x0.dtype), -1.0, 1.0)


def _at(coef: torch.Tensor, step: int) -> torch.Tensor:
    """Coefficient of respaced step ``step`` as float32 (0-d), as the release uses it."""
    return coef[step].float()


@dataclass(frozen=True)
class SamplerOptions:
    """What the sampler loop reads. The diffusion config (``util.config.DiffusionConfig``)
    extends this class with the schedule's keys; the metadata ``help`` (and ``choices``) make
    a field a command-line override in ``sample.py``."""
    sampler: str = field(default="ddim", metadata={
        "choices": SAMPLERS, "help": "override the config: ddim (released) or ddpm (paper Algorithm 1)"})
    model_mean_type: str = "epsilon"
    model_var_type: str = "learned_range"
    clip_denoised: bool = True
    dynamic_threshold: bool = False
    rescale_timesteps: bool = False
    eta: float = field(default=0.0, metadata={"help": "DDIM eta (overrides the config; 0 as released)"})


def model_timesteps(sched: Schedule, step: int, batch: int, rescale: bool) -> torch.Tensor:
    """The timestep the network is called with: the *original* index of respaced ``step``
    (the checkpoint was trained on 0..999), optionally rescaled to a 1000-step range."""
    t = sched.timestep_map[step].expand(batch)
    if rescale:
        return t.float() * (1000.0 / sched.original_num_steps)
    return t


def split_model_output(out: torch.Tensor, channels: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    if out.shape[1] == 2 * channels:
        mean_part, var_part = torch.split(out, channels, dim=1)
        return mean_part, var_part
    return out, None


def predict_x0(opts: SamplerOptions, sched: Schedule, step: int, x_t: torch.Tensor,
               mean_part: torch.Tensor) -> torch.Tensor:
    """x0 from the network's mean output, then dynamic threshold / clamp (paper Eq. 4)."""
    if opts.model_mean_type == "epsilon":
        x0 = _at(sched.sqrt_recip_alphas_cumprod, step) * x_t \
            - _at(sched.sqrt_recipm1_alphas_cumprod, step) * mean_part
    elif opts.model_mean_type == "start_x":
        x0 = mean_part
    else:  # previous_x: invert the posterior mean
        x0 = _at(1.0 / sched.posterior_mean_coef1, step) * mean_part \
            - _at(sched.posterior_mean_coef2 / sched.posterior_mean_coef1, step) * x_t
    if opts.dynamic_threshold:
        x0 = dynamic_threshold_release(x0)
    if opts.clip_denoised:
        x0 = x0.clamp(-1, 1)
    return x0


def log_variance(opts: SamplerOptions, sched: Schedule, step: int,
                 var_part: Optional[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """log sigma_t^2 of the reverse step (used by the DDPM sampler)."""
    if opts.model_var_type == "learned_range":
        frac = (var_part + 1.0) / 2.0
        return frac * _at(torch.log(sched.betas), step) \
            + (1 - frac) * _at(sched.posterior_log_variance_clipped, step)
    if opts.model_var_type == "learned":
        return var_part
    if opts.model_var_type == "fixed_small":
        return _at(torch.log(sched.posterior_variance.clamp_min(1e-20)), step).expand_as(like)
    # fixed_large: betas, with the first entry replaced by the posterior variance
    large = torch.cat([sched.posterior_variance[1:2], sched.betas[1:]])
    return _at(torch.log(large), step).expand_as(like)


# --------------------------------------------------------------------------------------------
# The sampler loop
# --------------------------------------------------------------------------------------------

NoiseFn = Callable[[torch.Tensor], torch.Tensor]


def seeded_noise(generators: Sequence[torch.Generator]) -> NoiseFn:
    """Noise like x drawn per image, each image from its own generator (on the generator's
    device, then moved to x's), so that an image's noise does not depend on its neighbours."""
    def draw(like: torch.Tensor) -> torch.Tensor:
        per_image = like.shape[1:]
        return torch.cat([torch.randn((1, *per_image), generator=g, device=g.device,
                                      dtype=like.dtype) for g in generators]).to(like.device)
    return draw


def sample(model: Callable, x_T: torch.Tensor, sched: Schedule, opts: SamplerOptions, *,
           x0_hook=None, hook_state=None, noise: Optional[NoiseFn] = None,
           callback: Optional[Callable[[dict], None]] = None,
           progress: bool = False, desc: str = "steps") -> torch.Tensor:
    """Run the reverse process from x_T over all respaced steps; return x_0.

    ``opts.sampler``: "ddim" (the release; DDIM update with ``eta``, paper-free since the release
    uses it) or "ddpm" (paper Algorithm 1: the posterior mean of q(x_{t-1} | x_t, x0) from the
    corrected x0, plus sigma_t z with the model's variance).
    """
    if opts.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {opts.sampler!r}: use one of {', '.join(SAMPLERS)}")
    needs_noise = opts.sampler == "ddpm" or opts.eta > 0
    if needs_noise and noise is None:
        raise ValueError("this sampler draws noise: pass noise=seeded_noise(generators)")
    channels = x_T.shape[1]
    batch = x_T.shape[0]
    steps = range(sched.num_steps - 1, -1, -1)
    if progress:  # drawn on a terminal only: disable=None turns the bar off for logs and pipes
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc=desc, leave=False, file=sys.stderr, disable=None)

    x_t = x_T
    for step in steps:
        # 1. The network at the original timestep: eps (and the variance interpolation).
        out = model(x_t, model_timesteps(sched, step, batch, opts.rescale_timesteps))
        mean_part, var_part = split_model_output(out.float(), channels)
        # 2. x0 estimate, clamped.
        x0_raw = predict_x0(opts, sched, step, x_t, mean_part)
        # 3. The hook corrects x0 (DDFM: one EM step on the luminance).
        x0_pred = x0_raw
        if x0_hook is not None:
            x0_pred, hook_state = x0_hook(x0_raw, step, hook_state)
        # 4. eps consistent with the corrected x0.
        eps = (_at(sched.sqrt_recip_alphas_cumprod, step) * x_t - x0_pred) \
            / _at(sched.sqrt_recipm1_alphas_cumprod, step)
        last = step == 0
        if opts.sampler == "ddim":
            # 5a. DDIM update (Song et al. Eq. 12), sigma from eta.
            abar = _at(sched.alphas_cumprod, step)
            abar_prev = _at(sched.alphas_cumprod_prev, step)
            sigma = opts.eta * torch.sqrt((1 - abar_prev) / (1 - abar)) * torch.sqrt(1 - abar / abar_prev)
            x_prev = x0_pred * torch.sqrt(abar_prev) + torch.sqrt(1 - abar_prev - sigma ** 2) * eps
            if opts.eta > 0 and not last:
                x_prev = x_prev + sigma * noise(x_t)
        else:
            # 5b. Paper Algorithm 1: x_{t-1} ~ q(x_{t-1} | x_t, x0_pred) with the model's sigma_t.
            x_prev = _at(sched.posterior_mean_coef1, step) * x0_pred \
                + _at(sched.posterior_mean_coef2, step) * x_t
            if not last:
                log_var = log_variance(opts, sched, step, var_part, x_t)
                x_prev = x_prev + torch.exp(0.5 * log_var) * noise(x_t)
        if callback is not None:
            callback({"step": step, "x_t": x_t, "x0_raw": x0_raw, "x0_pred": x0_pred,
                      "eps": eps, "sample": x_prev})
        x_t = x_prev
    return x_t
