"""One EM iteration of DDFM's hierarchical Bayesian fusion model (paper Sec. 3.3, Algorithm 1).

With ``y = I - V`` and ``x = f - V`` the likelihood subproblem is

    min_x  ||y - x||_1 + phi * ||grad x||_1                                   (paper Eq. 13)

made tractable by hierarchical priors: ``y - x`` is Laplacian with latent scales C (``m`` in the
paper) and ``x`` with latent scales D (``n``), tau_a and tau_b their hyper-parameters; the TV term
is split with an auxiliary H = y - x and dual-like terms F1, F2 on its horizontal and vertical
differences. Per diffusion step DDFM runs one iteration:

    E-step  C, D, tau_a, tau_b from the current x                               (Eqs. 18-21)
    M-step  H by the FFT-solved TV proximal step, F1/F2, then x in closed form  (Eqs. 23-25)
    output  f = I - x   (as released)

Names: the paper's I is our ``ir`` and its V our ``vis`` (Eq. 13); the release calls the arrays
I, V, f_pre, HyperP (our ``EMState``) and LAMBDA/RHO (``lamb``/``rho``). The release passes the
*visible* image as I and the *infrared* one as V; that choice is made by the caller
(``em_roles``, see :data:`ddfm.config.EM_ROLES` and :func:`ddfm.fusion.em_role_images`), which
then hands this function the visible image as ``ir``: here the names are the EM model's roles.

All tensors are (N, 1, H, W) float32 on one device; tau_a/tau_b are kept per image,
(N, 1, 1, 1), so a batch of N pairs gives each pair exactly what a batch of one gives it
(the release averages over the whole tensor, which is the same thing for its batch of one).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ddfm.config import FuseOptions


class EMOperators(NamedTuple):
    """Fourier-domain constants of the M-step, computed once per image size."""
    otf_dx: torch.Tensor      # OTF of the horizontal difference kernel [1, -1]
    otf_dy: torch.Tensor      # OTF of the vertical difference kernel [1, -1]^T
    denom: torch.Tensor       # 1 + |otf_dx|^2 + |otf_dy|^2 (complex, as the release keeps it)


class EMState(NamedTuple):
    """What one EM step hands to the next (the release's ``HyperP`` dict)."""
    C: torch.Tensor
    D: torch.Tensor
    F1: torch.Tensor
    F2: torch.Tensor
    H: torch.Tensor
    tau_a: torch.Tensor       # (N, 1, 1, 1)
    tau_b: torch.Tensor       # (N, 1, 1, 1)
    ops: EMOperators


def psf2otf(psf: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """MATLAB's psf2otf for a small 2-D kernel: zero-pad to (height, width), circularly shift
    the kernel's centre to (0, 0), FFT. Kept complex (the release keeps these OTFs complex,
    since the imaginary part of a difference kernel's OTF is not negligible)."""
    kh, kw = psf.shape
    padded = torch.zeros(height, width, dtype=torch.float32, device=psf.device)
    padded[:kh, :kw] = psf.float()
    padded = torch.roll(padded, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
    return torch.fft.fft2(padded)


def em_operators(height: int, width: int, device: torch.device | str) -> EMOperators:
    diff_x = torch.tensor([[1.0, -1.0]], device=device)
    diff_y = torch.tensor([[1.0], [-1.0]], device=device)
    otf_dx = psf2otf(diff_x, height, width)
    otf_dy = psf2otf(diff_y, height, width)
    denom = 1 + torch.conj(otf_dx) * otf_dx + torch.conj(otf_dy) * otf_dy
    return EMOperators(otf_dx, otf_dy, denom)


def em_init(like: torch.Tensor) -> EMState:
    """Initial state (the release's ``EM_Initial``): C = D = 1, F1 = F2 = H = 0,
    tau_a = tau_b = 1, operators at the image size of ``like`` (N, 1, H, W)."""
    n = like.shape[0]
    ones = torch.ones_like(like, dtype=torch.float32)
    zeros = torch.zeros_like(like, dtype=torch.float32)
    tau = torch.ones(n, 1, 1, 1, dtype=torch.float32, device=like.device)
    ops = em_operators(like.shape[-2], like.shape[-1], like.device)
    return EMState(C=ones, D=ones.clone(), F1=zeros, F2=zeros.clone(), H=zeros.clone(),
                   tau_a=tau, tau_b=tau.clone(), ops=ops)


def prox_tv(target: torch.Tensor, F1: torch.Tensor, F2: torch.Tensor,
            ops: EMOperators) -> torch.Tensor:
    """H = argmin ||H - target||^2 + ||D_x H - F1||^2 + ||D_y H - F2||^2, solved in Fourier
    space with circular boundaries (paper Eq. 23)."""
    spectrum = (torch.fft.fft2(target)
                + torch.conj(ops.otf_dx) * torch.fft.fft2(F1)
                + torch.conj(ops.otf_dy) * torch.fft.fft2(F2))
    return torch.fft.ifft2(spectrum / ops.denom).real


def _backward_difference(h: torch.Tensor, dim: int) -> torch.Tensor:
    """h[i] - h[i+1] along ``dim``, with the last entry kept as h[-1] (the release's stencil)."""
    last = h.narrow(dim, h.shape[dim] - 1, 1)
    head = h.narrow(dim, 0, h.shape[dim] - 1) - h.narrow(dim, 1, h.shape[dim] - 1)
    return torch.cat([head, last], dim=dim)


def _image_mean(t: torch.Tensor) -> torch.Tensor:
    return t.mean(dim=(1, 2, 3), keepdim=True)


def em_step(f_pre: torch.Tensor, ir: torch.Tensor, vis: torch.Tensor, state: EMState,
            lamb: float = FuseOptions.lamb, rho: float = FuseOptions.rho) -> tuple[torch.Tensor, EMState]:
    """One EM iteration. ``ir``, ``vis``: the sources in the EM model's I and V roles (the
    caller's ``em_roles`` decides which image takes which: ``"release"`` passes the visible image
    as ``ir``). ``f_pre``: the fused-luminance estimate from the diffusion x0, in the same units
    ((N,1,H,W), [-1,1]). Returns the corrected estimate and the new state. Pure: the inputs are
    not modified."""
    y = ir - vis                                                                      # y = I - V
    x = f_pre - vis                                                                   # x = f - V

    # E-step: latent scales of x (D) and of y - x (C), then their hyper-parameters.
    # The 1e-6 sits inside the square for D but inside the difference for C, as released.
    D = torch.sqrt(2 / state.tau_b / (x ** 2 + 1e-6))
    C = torch.sqrt(2 / state.tau_a / ((y - x + 1e-6) ** 2))
    D = torch.where(D > 2 * C, 2 * C, D)   # cap D at 2C
    tau_b = _image_mean(1.0 / (D + 1e-10) + state.tau_b / 2)
    tau_a = _image_mean(1.0 / (C + 1e-10) + state.tau_a / 2)

    # M-step: TV proximal step for H, its scaled differences F1, F2, then x in closed form.
    H = prox_tv(y - x, state.F1, state.F2, state.ops)
    shrink = rho / (2 * lamb + rho)
    F1 = shrink * _backward_difference(H, dim=3)
    F2 = shrink * _backward_difference(H, dim=2)
    x = (2 * C * y + rho * (y - H)) / (2 * C + 2 * D + rho)

    fused = ir - x                                                                    # f = I - x
    return fused, EMState(C=C, D=D, F1=F1, F2=F2, H=H, tau_a=tau_a, tau_b=tau_b, ops=state.ops)
