"""DDFM fusion on tensors: the EM hook on the luminance of x0, seeded initial noise, and the
fused result as 8-bit grey. No files here (``util/images.py``), no argument parsing
(``sample.py``): this is the code path both the CLI and the Python API call.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from ddfm.color import luma_bt601, rgb_to_ycbcr_over_255, ycbcr_over_255_to_rgb
from ddfm.em import em_init, em_step
from ddfm.config import EM_ROLES, FuseOptions
from guided_diffusion.diffusion import SamplerOptions, Schedule, sample, seeded_noise


class FusionError(RuntimeError):
    """A pair that could not be fused (for example a non-finite sample)."""


def em_hook(ir: torch.Tensor, vis: torch.Tensor, fusion: FuseOptions):
    """The x0 hook of DDFM and its initial state: one EM step on the luminance of x0.

    Luminance is the release's transform (studio-swing YCbCr of x0 in [-1, 1] as if it were
    [0, 1] RGB, over 255); the EM output replaces it and x0 goes back to RGB by the inverse.
    """
    em_ir, em_vis = em_role_images(ir, vis, fusion.em_roles)

    def hook(x0_pred, step, state):
        ycbcr = rgb_to_ycbcr_over_255(x0_pred)
        fused_y, state = em_step(ycbcr[:, :1], em_ir, em_vis, state, fusion.lamb, fusion.rho)
        return ycbcr_over_255_to_rgb(torch.cat([fused_y, ycbcr[:, 1:]], dim=1)), state

    return hook, em_init(em_ir)


def seeded_generators(seeds: Sequence[int], device) -> list[torch.Generator]:
    """One generator per image, seeded: ``torch.Generator(device).manual_seed(s)`` draws the
    same numbers as the release's ``torch.manual_seed(s)`` followed by draws on ``device``."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def initial_noise(generators: Sequence[torch.Generator], channels: int, height: int, width: int,
                  device) -> torch.Tensor:
    """x_T, one (1, C, H, W) float32 draw per image from its own generator (on the generator's
    device), moved to ``device``: the sampler's own per-image noise, drawn once more."""
    like = torch.empty((len(generators), channels, height, width), dtype=torch.float32, device=device)
    return seeded_noise(generators)(like)


def fuse(model: Callable, sched: Schedule, opts: SamplerOptions, ir: torch.Tensor,
         vis: torch.Tensor, seeds: Sequence[int], fusion: FuseOptions = FuseOptions(), *,
         callback: Optional[Callable[[dict], None]] = None, progress: bool = False,
         desc: str = "steps", noise_device=None) -> torch.Tensor:
    """Fuse a batch of grey pairs. ``ir``, ``vis``: (N, 1, H, W) in [-1, 1] on the run device;
    ``seeds``: one per pair. ``noise_device``: where the seeded noise is drawn (default: the
    run device, as the release; "cpu" gives the same noise on every device, so a GPU run
    starts from the numbers a CPU run starts from). Returns the final RGB sample (N, 3, H, W)."""
    if ir.shape != vis.shape:
        raise ValueError(f"ir {tuple(ir.shape)} and vis {tuple(vis.shape)} differ in shape")
    if len(seeds) != ir.shape[0]:
        raise ValueError(f"{len(seeds)} seeds for a batch of {ir.shape[0]}")
    generators = seeded_generators(seeds, ir.device if noise_device is None else noise_device)
    x_T = initial_noise(generators, 3, ir.shape[-2], ir.shape[-1], ir.device)
    hook, state = em_hook(ir, vis, fusion)
    return sample(model, x_T, sched, opts, x0_hook=hook, hook_state=state,
                  noise=seeded_noise(generators), callback=callback, progress=progress, desc=desc)


def to_gray_uint8(rgb: torch.Tensor, rounding: str = "recon") -> torch.Tensor:
    """The release's saved grey: Y = 0.299 R + 0.587 G + 0.114 B, min-max normalised per image
    to [0, 255]; ``rounding`` "recon" stores floor(v + 0.4999) (what the release's recon PNGs
    hold), "progress" floor(v) (its ``astype('uint8')``). A constant image maps to 0.
    Returns (N, H, W) uint8 on the same device."""
    return normalise_to_uint8(luma_bt601(rgb), rounding)


def em_role_images(ir: torch.Tensor, vis: torch.Tensor, em_roles: str):
    """(em_ir, em_vis): the sources in the EM model's I and V roles for the chosen assignment
    (see :data:`ddfm.config.EM_ROLES`): release -> (visible, infrared), paper -> (infrared, visible)."""
    if em_roles == "release":
        return vis, ir
    if em_roles == "paper":
        return ir, vis
    raise ValueError(f"unknown em_roles {em_roles!r}: use one of {', '.join(EM_ROLES)}")


def em_only_fusion(ir: torch.Tensor, vis: torch.Tensor, fusion: FuseOptions,
                   iterations: int) -> torch.Tensor:
    """The EM-only baseline (``--prior none``): the hierarchical Bayesian fusion model iterated
    on its own, with no diffusion prior. Starts from the mean of the two sources and feeds each
    EM output back as the next estimate. Returns the fused luminance (N, 1, H, W)."""
    em_ir, em_vis = em_role_images(ir, vis, fusion.em_roles)
    state = em_init(em_ir)
    fused = (em_ir + em_vis) / 2
    for _ in range(iterations):
        fused, state = em_step(fused, em_ir, em_vis, state, fusion.lamb, fusion.rho)
    return fused


def normalise_to_uint8(luma: torch.Tensor, rounding: str = "recon") -> torch.Tensor:
    """(N, 1, H, W) or (N, H, W) -> (N, H, W) uint8, min-max normalised per image to [0, 255]."""
    if luma.dim() == 4:
        luma = luma[:, 0]
    lo = luma.amin(dim=(1, 2), keepdim=True)
    hi = luma.amax(dim=(1, 2), keepdim=True)
    span = hi - lo
    safe_span = torch.where(span > 0, span, torch.ones_like(span))
    scaled = torch.where(span > 0, (luma - lo) / safe_span, torch.zeros_like(luma)) * 255
    offset = 0.4999 if rounding == "recon" else 0.0
    return torch.floor(scaled + offset).clamp(0, 255).to(torch.uint8)
