"""Small building blocks of OpenAI's ADM UNet (guided-diffusion), written for this project.

Only what the 2-D UNet needs. Layer types and argument orders follow guided-diffusion so that
state-dict keys, parameter shapes and the numbers a released checkpoint produces stay the same.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# guided-diffusion normalises every layer with 32 groups.
NORM_GROUPS = 32


class GroupNorm32(nn.GroupNorm):
    """GroupNorm that always computes in float32 and returns the input's dtype.

    With ``use_fp16`` the UNet torso runs in float16, but its norm statistics stay float32
    (as in the release), which keeps the variance of large activations from overflowing.
    The affine parameters are read as float32 too, so a model cast whole to float16 or
    bfloat16 still works; for a float32 model this is exactly ``GroupNorm`` in float32.
    """

    # Set by ``UNetModel.set_low_precision_norms``: with bf16/fp16 inputs, normalise in the
    # input dtype (the kernels accumulate the statistics in float32 anyway) instead of making
    # float32 copies of the activations -- at 1024x768 those copies are the memory peak.
    low_precision = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.low_precision and x.dtype in (torch.bfloat16, torch.float16):
            with torch.autocast(x.device.type, enabled=False):
                weight = None if self.weight is None else self.weight.to(x.dtype)
                bias = None if self.bias is None else self.bias.to(x.dtype)
                return F.group_norm(x, self.num_groups, weight, bias, self.eps)
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).type(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    """The normalisation layer used throughout the UNet."""
    return GroupNorm32(NORM_GROUPS, channels)


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    """A 1-D or 2-D convolution (the attention projections are 1-D, the rest 2-D)."""
    if dims == 1:
        return nn.Conv1d(*args, **kwargs)
    if dims == 2:
        return nn.Conv2d(*args, **kwargs)
    raise ValueError(f"unsupported convolution dimensions: {dims} (only 1 and 2 are used)")


def linear(*args, **kwargs) -> nn.Linear:
    """A linear layer (kept as a helper so the model code reads like guided-diffusion's)."""
    return nn.Linear(*args, **kwargs)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` in place and return it.

    Residual branches start at zero so a freshly built network is close to the identity;
    this only matters for random initialisation, a loaded checkpoint overwrites it.
    """
    for parameter in module.parameters():
        parameter.detach().zero_()
    return module


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """Sinusoidal embeddings ``[cos(t * f_i), sin(t * f_i)]`` of shape (N, dim).

    ``timesteps`` is a 1-D tensor of (possibly fractional) timestep values. The frequencies
    are computed on the CPU in float32 exactly as guided-diffusion does and then moved, so the
    embedding is bit-identical to the release whatever device the model runs on.
    """
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half
    ).to(device=timesteps.device)
    angles = timesteps[:, None].float() * frequencies[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def convert_module_to_f16(module: nn.Module) -> None:
    """Cast a convolution's weight and bias to float16 (other layers are left in float32).

    Mirrors guided-diffusion's ``convert_module_to_f16``: only convolutions change dtype;
    norms and the timestep-embedding linears keep float32 parameters.
    """
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        module.weight.data = module.weight.data.half()
        if module.bias is not None:
            module.bias.data = module.bias.data.half()


def convert_module_to_f32(module: nn.Module) -> None:
    """Undo :func:`convert_module_to_f16`."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        module.weight.data = module.weight.data.float()
        if module.bias is not None:
            module.bias.data = module.bias.data.float()
