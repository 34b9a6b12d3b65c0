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
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

SCHEDULES = ("linear", "cosine")
SAMPLERS = ("ddim", "ddpm", "dpmpp_2m", "dpmpp_3m")
# DPM-Solver++ multistep samplers and their order (Lu et al. 2022, arXiv:2211.01095)
DPMPP_ORDERS = {"dpmpp_2m": 2, "dpmpp_3m": 3}
# How a step count picks original timesteps: uniform (the release's respacing), uniform in
# log-SNR, or uniform in sqrt(t) (DPM-Solver's "time_quadratic": dense near t = 0)
SPACINGS = ("uniform", "logsnr", "quadratic")
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


def spaced_timesteps(base_alphas_cumprod: np.ndarray, count: int, spacing: str) -> list[int]:
    """``count`` distinct original timesteps, ascending, from 0 to the last, placed by
    ``spacing``: "uniform" is :func:`space_timesteps` (the release); "logsnr" puts them uniform
    in lambda = log(sqrt(abar) / sqrt(1 - abar)); "quadratic" uniform in sqrt(t)."""
    num_steps = len(base_alphas_cumprod)
    if spacing == "uniform":
        return space_timesteps(num_steps, count)
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}: use one of {', '.join(SPACINGS)}")
    if not 2 <= count <= num_steps:
        raise ValueError(f"cannot place {count} steps among {num_steps}")
    fraction = np.linspace(0.0, 1.0, count)
    if spacing == "quadratic":
        wanted = fraction ** 2 * (num_steps - 1)
    else:  # lambda falls with t: the nearest timestep to each lambda of a uniform grid
        lam = 0.5 * (np.log(base_alphas_cumprod) - np.log1p(-base_alphas_cumprod))
        targets = lam[0] + fraction * (lam[-1] - lam[0])
        wanted = np.interp(-targets, -lam, np.arange(num_steps, dtype=np.float64))
    kept = [int(v) for v in np.rint(wanted)]
    # distinct and within range: at least one apart going up, and room left for the rest
    for i in range(1, count):
        kept[i] = max(kept[i], kept[i - 1] + 1)
    for i in range(count - 1, -1, -1):
        kept[i] = min(kept[i], num_steps - count + i)
    return kept


def kept_timesteps(base_alphas_cumprod: np.ndarray, timestep_respacing, spacing: str = "uniform") -> list[int]:
    """The original timesteps a respacing keeps: :func:`space_timesteps` for "uniform" (every
    form the release accepts), :func:`spaced_timesteps` for the others (a step count only)."""
    if spacing == "uniform":
        return space_timesteps(len(base_alphas_cumprod), timestep_respacing)
    if isinstance(timestep_respacing, bool) or not str(timestep_respacing).strip().isdigit():
        raise ValueError(f"spacing {spacing} takes a step count, not {timestep_respacing!r}")
    return spaced_timesteps(base_alphas_cumprod, int(str(timestep_respacing).strip()), spacing)


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
                  device="cpu", spacing: str = "uniform") -> Schedule:
    """Build the respaced process once, as tensors on ``device``. A ``spacing`` other than
    "uniform" needs ``timestep_respacing`` to be a step count (see :func:`spaced_timesteps`)."""
    base_alphas_cumprod = np.cumprod(1.0 - named_beta_schedule(noise_schedule, steps))
    kept = kept_timesteps(base_alphas_cumprod, timestep_respacing, spacing)
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
    """What the sampler loop reads (defaults: the released DDIM). A config layer may extend
    this class with the schedule's keys and with help and rules for its fields."""
    sampler: str = "ddim"
    model_mean_type: str = "epsilon"
    model_var_type: str = "learned_range"
    clip_denoised: bool = True
    dynamic_threshold: bool = False
    rescale_timesteps: bool = False
    eta: float = 0.0


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


def denoised(model: Callable, sched: Schedule, opts: SamplerOptions, x_t: torch.Tensor, step: int,
             x0_hook=None, hook_state=None):
    """Steps 1-3 of DDFM's order at respaced ``step``: the network at the original timestep,
    x0 from its output (clamped), the hook's correction. Returns (x0_raw, x0_pred, the
    network's variance part or None, hook_state)."""
    out = model(x_t, model_timesteps(sched, step, x_t.shape[0], opts.rescale_timesteps))
    mean_part, var_part = split_model_output(out.float(), x_t.shape[1])
    x0_raw = predict_x0(opts, sched, step, x_t, mean_part)
    x0_pred = x0_raw
    if x0_hook is not None:
        x0_pred, hook_state = x0_hook(x0_raw, step, hook_state)
    return x0_raw, x0_pred, var_part, hook_state


def eps_from_x0(sched: Schedule, step: int, x_t: torch.Tensor, x0_pred: torch.Tensor) -> torch.Tensor:
    """Step 4: the eps consistent with the (corrected) x0."""
    return (_at(sched.sqrt_recip_alphas_cumprod, step) * x_t - x0_pred) \
        / _at(sched.sqrt_recipm1_alphas_cumprod, step)


def _step_range(sched: Schedule, progress: bool, desc: str):
    steps = range(sched.num_steps - 1, -1, -1)
    if progress:  # drawn on a terminal only: disable=None turns the bar off for logs and pipes
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc=desc, leave=False, file=sys.stderr, disable=None)
    return steps


def sample(model: Callable, x_T: torch.Tensor, sched: Schedule, opts: SamplerOptions, *,
           x0_hook=None, hook_state=None, noise: Optional[NoiseFn] = None,
           callback: Optional[Callable[[dict], None]] = None,
           progress: bool = False, desc: str = "steps") -> torch.Tensor:
    """Run the reverse process from x_T over all respaced steps; return x_0.

    ``opts.sampler``: "ddim" (the release; DDIM update with ``eta``, paper-free since the release
    uses it), "ddpm" (paper Algorithm 1: the posterior mean of q(x_{t-1} | x_t, x0) from the
    corrected x0, plus sigma_t z with the model's variance), or "dpmpp_2m" / "dpmpp_3m"
    (:func:`sample_dpmpp`, deterministic).
    """
    if opts.sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {opts.sampler!r}: use one of {', '.join(SAMPLERS)}")
    if opts.sampler in DPMPP_ORDERS:
        if opts.eta > 0:
            raise ValueError(f"eta {opts.eta} applies to the ddim sampler only; {opts.sampler} is "
                             "deterministic: leave eta at 0")
        return sample_dpmpp(model, x_T, sched, opts, DPMPP_ORDERS[opts.sampler], x0_hook=x0_hook,
                            hook_state=hook_state, callback=callback, progress=progress, desc=desc)
    needs_noise = opts.sampler == "ddpm" or opts.eta > 0
    if needs_noise and noise is None:
        raise ValueError("this sampler draws noise: pass noise=seeded_noise(generators)")

    x_t = x_T
    for step in _step_range(sched, progress, desc):
        # 1-3. The network at the original timestep, x0 clamped, the hook's correction
        # (DDFM: one EM step on the luminance).
        x0_raw, x0_pred, var_part, hook_state = denoised(model, sched, opts, x_t, step, x0_hook, hook_state)
        # 4. eps consistent with the corrected x0.
        eps = eps_from_x0(sched, step, x_t, x0_pred)
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


# --------------------------------------------------------------------------------------------
# DPM-Solver++ (Lu, Zhou, Bao, Chen, Li, Zhu 2022, arXiv:2211.01095), data-prediction form
# --------------------------------------------------------------------------------------------
# With alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t), lambda_t = log(alpha_t / sigma_t) and
# h = lambda_s - lambda_t for a step from t to s < t, the exact solution of the diffusion ODE
# in terms of the data prediction x0(x_r, r) is (the paper's exact solution, data-prediction form)
#     x_s = sigma_s / sigma_t x_t + sigma_s * integral_{lambda_t}^{lambda_s} e^lambda x0 dlambda.
# Taking x0 constant over the step gives DPM-Solver++(1),
#     x_s = sigma_s / sigma_t x_t - alpha_s (e^{-h} - 1) x0,
# which is DDIM with eta = 0; the multistep methods replace x0 by its linear (DPM-Solver++(2M),
# the paper's Algorithm 2) or quadratic (3M, as the authors' multistep_dpm_solver_third_update)
# extrapolation through the x0 of earlier steps. (Equation numbers differ between the paper's
# versions, so the equations are written out here.)
# The x0 used is DDFM's: clamped and EM-corrected by the hook, as DDIM uses it.

def log_snr_halves(sched: Schedule) -> tuple[np.ndarray, np.ndarray]:
    """(lambda_t, lambda_s) per respaced step, float64: at the step's own timestep and at the
    one it steps to (lambda_s = +inf at step 0, which steps to abar = 1)."""
    abar = sched.alphas_cumprod.double().cpu().numpy()
    abar_prev = sched.alphas_cumprod_prev.double().cpu().numpy()
    with np.errstate(divide="ignore"):
        lam = 0.5 * (np.log(abar) - np.log1p(-abar))
        lam_prev = 0.5 * (np.log(abar_prev) - np.log1p(-abar_prev))
    return lam, lam_prev


def multistep_x0(order: int, x0_history: list, h_history: list) -> torch.Tensor:
    """The x0 a multistep update of ``order`` integrates: ``x0_history`` newest first (x0 at t,
    at the step before, ...), ``h_history`` the lambda steps newest first (h of this step,
    h of the step before, ...). Order 1: x0 itself."""
    x0_0 = x0_history[0]
    if order == 1:
        return x0_0
    h, h_0 = h_history[0], h_history[1]
    r0 = h_0 / h
    d1_0 = (x0_0 - x0_history[1]) / r0
    if order == 2:
        # Algorithm 2: D = (1 + 1/(2 r)) x0_{i-1} - 1/(2 r) x0_{i-2}
        return x0_0 + 0.5 * d1_0
    # order 3: divided differences through three x0 (first and second order terms)
    r1 = h_history[2] / h
    d1_1 = (x0_history[1] - x0_history[2]) / r1
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    phi_1 = math.expm1(-h)
    phi_2 = phi_1 / h + 1.0
    phi_3 = phi_2 / h - 0.5
    # x_s = sigma_s/sigma_t x_t - alpha_s phi_1 x0 + alpha_s phi_2 D1 - alpha_s phi_3 D2,
    # written as - alpha_s phi_1 * (the x0 returned here)
    return x0_0 - (phi_2 / phi_1) * d1 + (phi_3 / phi_1) * d2


def sample_dpmpp(model: Callable, x_T: torch.Tensor, sched: Schedule, opts: SamplerOptions,
                 order: int = 2, *, x0_hook=None, hook_state=None,
                 callback: Optional[Callable[[dict], None]] = None,
                 progress: bool = False, desc: str = "steps") -> torch.Tensor:
    """DPM-Solver++ multistep of ``order`` (1, 2 or 3) over the respaced steps, one network call
    per step, in DDFM's order (network -> x0 -> clamp -> hook). The first steps use the orders
    their history allows, and the last ones lower it (DPM-Solver's lower_order_final): step 0
    steps to abar = 1, where the update is x0 itself, as DDIM's."""
    if order not in (1, 2, 3):
        raise ValueError(f"DPM-Solver++ order must be 1, 2 or 3, got {order}")
    lam, lam_prev = log_snr_halves(sched)
    abar_prev = sched.alphas_cumprod_prev.double().cpu().numpy()
    abar = sched.alphas_cumprod.double().cpu().numpy()
    x0_history, h_history = [], []
    x_t = x_T
    for step in _step_range(sched, progress, desc):
        x0_raw, x0_pred, _, hook_state = denoised(model, sched, opts, x_t, step, x0_hook, hook_state)
        h = float(lam_prev[step] - lam[step])
        x0_history = [x0_pred] + x0_history[:2]
        h_history = [h] + h_history[:2]
        step_order = min(order, len(x0_history), step + 1)
        if step == 0:
            x_prev = x0_pred  # sigma_s = 0: DPM-Solver++(1) with e^{-h} = 0 gives x_s = alpha_s x0 = x0
        else:
            sigma_ratio = math.sqrt((1.0 - abar_prev[step]) / (1.0 - abar[step]))
            alpha_phi_1 = math.sqrt(abar_prev[step]) * math.expm1(-h)
            # x_s = sigma_s/sigma_t x_t - alpha_s (e^{-h} - 1) D, D from multistep_x0 (order 1: D = x0)
            x_prev = sigma_ratio * x_t - alpha_phi_1 * multistep_x0(step_order, x0_history, h_history)
        if callback is not None:
            callback({"step": step, "x_t": x_t, "x0_raw": x0_raw, "x0_pred": x0_pred,
                      "eps": eps_from_x0(sched, step, x_t, x0_pred), "sample": x_prev})
        x_t = x_prev
    return x_t
