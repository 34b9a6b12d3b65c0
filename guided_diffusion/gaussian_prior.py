"""A stationary Gaussian image prior whose exact denoiser is known: a stand-in for the UNet.

The prior on x0 (C colour channels, values in [-1, 1]): x0 = mean + a Gaussian field whose
colour components along the eigenvectors u_k of a colour covariance (eigenvalues d_k) are
independent and stationary, each Fourier coefficient (orthonormal FFT) of component k at
frequency f having variance v_k(f) = d_k * S(|f|). S is a radial power spectrum profile in
cycles per pixel, normalised to mean 1 over the grid it was fitted on, and interpolated in
log power at any other size, so the prior is defined, and its denoiser exact, at every size.

For x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, write y = x_t / sqrt(abar) - mean and
q = (1 - abar) / abar; per coefficient y = (x0 - mean) + sqrt(q) eps, so

    E[x0 | x_t] = mean + U F^-1[ v / (v + q) * F[U^T y] ]     (a per-frequency Wiener filter)

and the model returns eps = (x_t - sqrt(abar) E[x0 | x_t]) / sqrt(1 - abar), as an
eps-predicting UNet does, plus constant variance channels when asked for them.

The probability-flow ODE of this prior (no clamp, no x0 correction) is solved per coefficient
by :func:`ode_solution`: y_t / sqrt(v + q_t) stays constant along the trajectory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import torch


class GaussianPriorError(ValueError):
    """A statistics file that cannot be used; the message names it and the fix."""


STAT_KEYS = ("mean", "color_cov", "radius", "power")


def load_statistics(path: Union[str, Path]) -> dict:
    """The fitted statistics (``mean`` (C,), ``color_cov`` (C, C), ``radius`` (K,) ascending,
    ``power`` (K,) > 0) as float64 arrays, checked."""
    path = Path(path)
    fix = "refit it with: python -m tools.fit_gaussian_prior"
    try:
        with np.load(path) as f:
            stats = {k: np.asarray(f[k], dtype=np.float64) for k in STAT_KEYS}
    except FileNotFoundError:
        raise GaussianPriorError(f"{path}: Gaussian prior statistics not found; {fix}") from None
    except KeyError as exc:
        raise GaussianPriorError(f"{path}: no array {exc} in the statistics file; {fix}") from None
    except (OSError, ValueError) as exc:
        raise GaussianPriorError(f"{path}: not a statistics .npz ({exc}); {fix}") from None
    channels = stats["mean"].shape[0]
    ok = (stats["color_cov"].shape == (channels, channels) and stats["radius"].ndim == 1
          and stats["radius"].shape == stats["power"].shape and np.all(stats["power"] > 0)
          and np.all(np.diff(stats["radius"]) > 0) and all(np.isfinite(v).all() for v in stats.values()))
    if not ok:
        raise GaussianPriorError(f"{path}: statistics of inconsistent shapes or non-positive power; {fix}")
    return stats


class GaussianPrior:
    """``model(x_t, t) -> eps`` (and ``variance_channels`` more channels holding
    ``variance_value`` when ``learn_sigma``) at the original timesteps ``t`` of the process
    whose cumulative alphas are ``alphas_cumprod`` (float64, one per original timestep).

    ``variance_value`` -1 selects, under ``learned_range``, the posterior variance of
    q(x_{t-1} | x_t, x0): the DDPM sampler's "fixed_small"."""

    def __init__(self, stats: dict, alphas_cumprod: np.ndarray, learn_sigma: bool = True,
                 variance_value: float = -1.0):
        self.mean = np.asarray(stats["mean"], dtype=np.float64)
        eigenvalues, eigenvectors = np.linalg.eigh(np.asarray(stats["color_cov"], dtype=np.float64))
        self.color_variances = np.clip(eigenvalues, 1e-8, None)  # a grey-only fit has rank 1
        self.color_basis = eigenvectors
        self.radius = np.asarray(stats["radius"], dtype=np.float64)
        self.log_power = np.log(np.asarray(stats["power"], dtype=np.float64))
        self.alphas_cumprod = torch.as_tensor(np.asarray(alphas_cumprod, dtype=np.float64))
        self.learn_sigma = learn_sigma
        self.variance_value = variance_value
        self._variances = {}

    @classmethod
    def load(cls, path, alphas_cumprod: np.ndarray, learn_sigma: bool = True) -> "GaussianPrior":
        return cls(load_statistics(path), alphas_cumprod, learn_sigma)

    @property
    def channels(self) -> int:
        return int(self.mean.shape[0])

    def variances(self, height: int, width: int, device) -> torch.Tensor:
        """v_k(f) of every rfft2 coefficient: (C, H, W // 2 + 1) float64 on ``device``."""
        key = (height, width, str(device))
        if key not in self._variances:
            fy = np.fft.fftfreq(height)[:, None]
            fx = np.fft.rfftfreq(width)[None, :]
            radial = np.exp(np.interp(np.hypot(fy, fx), self.radius, self.log_power))
            v = self.color_variances[:, None, None] * radial[None]
            self._variances[key] = torch.from_numpy(v).to(device)
        return self._variances[key]

    def _colour(self, x: torch.Tensor, inverse: bool) -> torch.Tensor:
        """Rotate the channels into the colour eigenbasis (U^T x) or back (U x)."""
        basis = torch.from_numpy(self.color_basis).to(x.device)
        return torch.einsum("ck,nkhw->nchw" if inverse else "ck,nchw->nkhw", basis, x)

    def _mean(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.mean).to(x.device).view(1, -1, 1, 1)

    def denoise(self, x_t: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        """E[x0 | x_t] (float64) for x_t (N, C, H, W) at cumulative alphas ``abar`` (N,)."""
        x = x_t.double()
        abar = abar.double().to(x.device).view(-1, 1, 1, 1)
        y = self._colour(x / abar.sqrt() - self._mean(x), inverse=False)
        v = self.variances(x.shape[-2], x.shape[-1], x.device)
        gain = v / (v + (1 - abar) / abar)
        filtered = torch.fft.irfft2(gain * torch.fft.rfft2(y, norm="ortho"), s=x.shape[-2:], norm="ortho")
        return self._mean(x) + self._colour(filtered, inverse=True)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x_t.shape[1] != self.channels:
            raise ValueError(f"the Gaussian prior has {self.channels} channels, x_t has {x_t.shape[1]}")
        abar = self.alphas_cumprod.to(x_t.device)[t.long()]
        x0 = self.denoise(x_t, abar)
        abar = abar.view(-1, 1, 1, 1)
        eps = ((x_t.double() - abar.sqrt() * x0) / (1 - abar).sqrt()).to(x_t.dtype)
        if not self.learn_sigma:
            return eps
        return torch.cat([eps, torch.full_like(eps, self.variance_value)], dim=1)

    def ode_solution(self, x_start: torch.Tensor, abar_start: float, abar_end: float) -> torch.Tensor:
        """The probability-flow ODE's exact x at ``abar_end`` from ``x_start`` at ``abar_start``
        (float64): per coefficient y / sqrt(v + q) is constant, y = x / sqrt(abar) - mean."""
        x = x_start.double()
        q_start, q_end = (1 - abar_start) / abar_start, (1 - abar_end) / abar_end
        y = self._colour(x / abar_start ** 0.5 - self._mean(x), inverse=False)
        v = self.variances(x.shape[-2], x.shape[-1], x.device)
        scale = torch.sqrt((v + q_end) / (v + q_start))
        y_end = torch.fft.irfft2(scale * torch.fft.rfft2(y, norm="ortho"), s=x.shape[-2:], norm="ortho")
        return abar_end ** 0.5 * (self._mean(x) + self._colour(y_end, inverse=True))
