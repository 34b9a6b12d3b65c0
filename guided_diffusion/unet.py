"""OpenAI's ADM UNet (the 2-D ``UNetModel`` of guided-diffusion), written for this project.

The layout (module tree, state-dict key names, parameter shapes) and the arithmetic follow
guided-diffusion's ``unet.py`` so that ``256x256_diffusion_uncond.pt`` loads unchanged and
produces the release's numbers. Two things are added:

* a choice of attention kernel (``attention=`` / :meth:`UNetModel.set_attention`) that never
  changes the state dict: ``legacy`` (the release's einsum maths), ``chunked`` (the same maths,
  128 queries at a time, so the T x T weight matrix never exists at once), ``sdpa``
  (``torch.nn.functional.scaled_dot_product_attention``) and ``auto`` (sdpa: the fastest here
  on CUDA and, with torch 2.13, on the CPU too -- 1.29 s vs chunked 1.85 s and legacy 4.79 s
  for the tiny UNet at 288x512 on 2 threads);
* :func:`create_model` loads ``model_path`` through :mod:`guided_diffusion.checkpoint`, which refuses any
  file that does not fit instead of silently keeping random weights.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as gradient_checkpoint

from .nn import (
    GroupNorm32,
    conv_nd,
    convert_module_to_f16,
    convert_module_to_f32,
    linear,
    normalization,
    timestep_embedding,
    zero_module,
)

ATTENTION_MODES = ("legacy", "sdpa", "chunked", "auto")
# Queries per chunk in "chunked" mode: 128 x 9,216 float32 weights per head is ~4.5 MB, small
# enough to stay in cache on a CPU while keeping the Python loop short.
ATTENTION_CHUNK = 128
# ImageNet class count of guided-diffusion's class-conditional checkpoints.
NUM_CLASSES = 1000
# guided-diffusion's channel multipliers when the config leaves ``channel_mult`` empty.
DEFAULT_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


def _check_attention_mode(mode: str) -> str:
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION_MODES)}; got {mode!r}")
    return mode


class TimestepBlock(nn.Module):
    """A module whose ``forward`` takes the timestep embedding as a second argument."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential):
    """``nn.Sequential`` that hands the timestep embedding to the children that take it."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling, optionally followed by a 3x3 convolution."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = conv_nd(2, channels, self.out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """2x downsampling by a strided 3x3 convolution or, without a convolution, 2x2 averaging."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        if use_conv:
            self.op = conv_nd(2, channels, self.out_channels, 3, stride=2, padding=1)
        else:
            if self.out_channels != channels:
                raise ValueError("average-pool downsampling cannot change the channel count")
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block conditioned on the timestep embedding, optionally resampling.

    ``use_scale_shift_norm`` applies the embedding FiLM-style (``norm(h) * (1 + scale) +
    shift``) instead of adding it. ``up``/``down`` resample both branches between the first
    norm+SiLU and the first convolution, as guided-diffusion's ``resblock_updown`` does.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_conv: bool = False,
        use_scale_shift_norm: bool = False,
        use_checkpoint: bool = False,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_checkpoint = use_checkpoint
        self.use_scale_shift_norm = use_scale_shift_norm

        self.in_layers = nn.Sequential(
            normalization(channels),
            nn.SiLU(),
            conv_nd(2, channels, self.out_channels, 3, padding=1),
        )

        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()

        emb_out_channels = 2 * self.out_channels if use_scale_shift_norm else self.out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), linear(emb_channels, emb_out_channels))
        self.out_layers = nn.Sequential(
            normalization(self.out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(conv_nd(2, self.out_channels, self.out_channels, 3, padding=1)),
        )

        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        elif use_conv:
            self.skip_connection = conv_nd(2, channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = conv_nd(2, channels, self.out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return gradient_checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        norm_in, act_in, conv_in = self.in_layers
        if self.updown:
            h = self.h_upd(act_in(norm_in(x)))
            x = self.x_upd(x)
            h = conv_in(h)
        else:
            h = conv_in(act_in(norm_in(x)))
        emb_out = self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = torch.chunk(emb_out, 2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            for layer in self.out_layers[1:]:
                h = layer(h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class QKVAttention(nn.Module):
    """Multi-head self-attention over packed ``qkv`` of shape (N, 3 * heads * ch, T).

    ``new_order`` picks guided-diffusion's head layout: False (``QKVAttentionLegacy``, the one
    the released checkpoints use) splits heads first, each head holding its own [q; k; v];
    True (``QKVAttention``) splits q, k, v first, each holding all heads. ``mode`` picks the
    kernel; all modes compute the same function and hold no parameters.
    """

    def __init__(self, num_heads: int, new_order: bool = False, mode: str = "auto"):
        super().__init__()
        self.num_heads = num_heads
        self.new_order = new_order
        self.mode = _check_attention_mode(mode)
        self.chunk_size = ATTENTION_CHUNK

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, new_order={self.new_order}, mode={self.mode!r}"

    def resolved_mode(self, device: torch.device) -> str:
        """The kernel ``auto`` stands for: sdpa on every device (measured fastest on CUDA and on
        this project's CPUs; ``chunked`` stays available, bit-identical to ``legacy``)."""
        if self.mode != "auto":
            return self.mode
        return "sdpa"

    def _split(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v as (N, heads, ch, T) views, following the configured head layout."""
        batch, width, length = qkv.shape
        if width % (3 * self.num_heads):
            raise ValueError(f"qkv width {width} is not divisible by 3 x {self.num_heads} heads")
        head_channels = width // (3 * self.num_heads)
        if self.new_order:
            q, k, v = qkv.chunk(3, dim=1)
            shape = (batch, self.num_heads, head_channels, length)
            return q.reshape(shape), k.reshape(shape), v.reshape(shape)
        per_head = qkv.reshape(batch, self.num_heads, 3 * head_channels, length)
        q, k, v = per_head.split(head_channels, dim=2)
        return q, k, v

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        batch, _, length = qkv.shape
        q, k, v = self._split(qkv)
        mode = self.resolved_mode(qkv.device)
        if mode == "sdpa":
            out = self._sdpa(q, k, v)
        else:
            out = self._einsum(q, k, v, chunked=(mode == "chunked"))
        return out.reshape(batch, -1, length)

    @staticmethod
    def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # SDPA wants (N, heads, T, ch) with unit last stride for its fused kernels; its default
        # scale 1/sqrt(ch) equals the legacy (q * ch**-0.25) . (k * ch**-0.25).
        q, k, v = (t.transpose(-1, -2).contiguous() for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(-1, -2)

    def _einsum(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunked: bool) -> torch.Tensor:
        batch, heads, head_channels, length = q.shape
        # Scaling q and k separately (rather than the product) is the release's fp16-safe order.
        scale = 1 / math.sqrt(math.sqrt(head_channels))
        q = (q * scale).reshape(batch * heads, head_channels, length)
        k = (k * scale).reshape(batch * heads, head_channels, length)
        v = v.reshape(batch * heads, head_channels, length)
        if not chunked or length <= self.chunk_size:
            return _attend(q, k, v)
        out = q.new_empty(q.shape)
        for start in range(0, length, self.chunk_size):
            stop = min(start + self.chunk_size, length)
            out[:, :, start:stop] = _attend(q[:, :, start:stop], k, v)
        return out


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q^T k) v^T for already-scaled (B, ch, Tq), (B, ch, T), (B, ch, T) -> (B, ch, Tq).

    The softmax runs in float32 and is cast back, as guided-diffusion's legacy attention does.
    """
    weight = torch.einsum("bct,bcs->bts", q, k)
    weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
    return torch.einsum("bts,bcs->bct", weight, v)


class AttentionBlock(nn.Module):
    """Spatial self-attention with a residual connection: ``x + proj_out(attn(qkv(norm(x))))``."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_checkpoint: bool = False,
        use_new_attention_order: bool = False,
        attention: str = "auto",
    ):
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(
                    f"attention channels {channels} are not divisible by num_head_channels "
                    f"{num_head_channels}"
                )
            self.num_heads = channels // num_head_channels
        self.use_checkpoint = use_checkpoint
        self.norm = normalization(channels)
        self.qkv = conv_nd(1, channels, channels * 3, 1)
        # Holds no parameters, so the kernel choice never shows in the state dict.
        self.attention = QKVAttention(self.num_heads, use_new_attention_order, attention)
        self.proj_out = zero_module(conv_nd(1, channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and torch.is_grad_enabled():
            return gradient_checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, *spatial = x.shape
        x = x.reshape(batch, channels, -1)
        h = self.proj_out(self.attention(self.qkv(self.norm(x))))
        return (x + h).reshape(batch, channels, *spatial)


class UNetModel(nn.Module):
    """guided-diffusion's 2-D UNet with attention and timestep embedding.

    ``attention_resolutions`` holds downsample rates (1, 2, 4, ...) at which the encoder and
    decoder get attention blocks; the middle block always has one. ``channel_mult`` gives the
    width of each level relative to ``model_channels``. ``num_classes`` makes the model
    class-conditional (``label_emb``). ``attention`` picks the kernel, see :class:`QKVAttention`.

    ``use_fp16`` converts the convolutions of the torso (input, middle and output blocks) to
    float16, like guided-diffusion's ``convert_to_fp16``; norms, the embedding MLPs and the
    output head stay float32.
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Iterable[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        num_classes: int | None = None,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        attention: str = "auto",
    ):
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads

        self.image_size = image_size
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = tuple(attention_resolutions)
        self.channel_mult = tuple(channel_mult)
        self.num_classes = num_classes
        self.use_fp16 = use_fp16
        self.attention_mode = _check_attention_mode(attention)

        def res_block(channels: int, out: int | None = None, **updown) -> ResBlock:
            return ResBlock(
                channels,
                time_embed_dim,
                dropout,
                out_channels=out,
                use_checkpoint=use_checkpoint,
                use_scale_shift_norm=use_scale_shift_norm,
                **updown,
            )

        def attention_block(channels: int, heads: int) -> AttentionBlock:
            return AttentionBlock(
                channels,
                num_heads=heads,
                num_head_channels=num_head_channels,
                use_checkpoint=use_checkpoint,
                use_new_attention_order=use_new_attention_order,
                attention=attention,
            )

        time_embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(
            linear(model_channels, time_embed_dim),
            nn.SiLU(),
            linear(time_embed_dim, time_embed_dim),
        )
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, time_embed_dim)

        # Encoder: per level, num_res_blocks ResBlocks (+ attention at the listed rates), then a
        # downsampling block except after the last level. Widths feed the decoder's skips.
        ch = input_ch = int(self.channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList(
            [TimestepEmbedSequential(conv_nd(2, in_channels, ch, 3, padding=1))]
        )
        skip_channels = [ch]
        downsample_rate = 1
        for level, mult in enumerate(self.channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res_block(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if downsample_rate in self.attention_resolutions:
                    layers.append(attention_block(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(self.channel_mult) - 1:
                down = res_block(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample, ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_channels.append(ch)
                downsample_rate *= 2

        self.middle_block = TimestepEmbedSequential(
            res_block(ch),
            attention_block(ch, num_heads),
            res_block(ch),
        )

        # Decoder: per level (deepest first), num_res_blocks + 1 ResBlocks each eating one skip,
        # attention at the listed rates, and an upsampling block closing every level but the top.
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(self.channel_mult))[::-1]:
            for block_index in range(num_res_blocks + 1):
                layers = [res_block(ch + skip_channels.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if downsample_rate in self.attention_resolutions:
                    layers.append(attention_block(ch, num_heads_upsample))
                if level and block_index == num_res_blocks:
                    layers.append(
                        res_block(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample, ch)
                    )
                    downsample_rate //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            normalization(ch),
            nn.SiLU(),
            zero_module(conv_nd(2, input_ch, out_channels, 3, padding=1)),
        )

        if use_fp16:
            self.convert_to_fp16()

    # --- precision -------------------------------------------------------------------------
    def convert_to_fp16(self) -> None:
        """Cast the torso's convolutions to float16 (guided-diffusion's ``use_fp16``)."""
        for torso in (self.input_blocks, self.middle_block, self.output_blocks):
            torso.apply(convert_module_to_f16)

    def convert_to_fp32(self) -> None:
        """Cast the torso's convolutions back to float32."""
        for torso in (self.input_blocks, self.middle_block, self.output_blocks):
            torso.apply(convert_module_to_f32)

    @property
    def dtype(self) -> torch.dtype:
        """dtype the torso computes in (float16 after ``convert_to_fp16``)."""
        return self.input_blocks[0][0].weight.dtype

    def set_low_precision_norms(self, enabled: bool = True) -> "UNetModel":
        """Let GroupNorms run in bf16/fp16 when their input is (see ``GroupNorm32``); used by the
        opt-in bf16/fp16 paths to save memory. Off by default (faithful float32 norms)."""
        for module in self.modules():
            if isinstance(module, GroupNorm32):
                module.low_precision = enabled
        return self

    # --- attention kernel ------------------------------------------------------------------
    def set_attention(self, mode: str) -> "UNetModel":
        """Switch every attention block to ``mode`` (legacy, sdpa, chunked or auto)."""
        self.attention_mode = _check_attention_mode(mode)
        for module in self.modules():
            if isinstance(module, QKVAttention):
                module.mode = mode
        return self

    # --- forward ---------------------------------------------------------------------------
    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (one halving per level)."""
        return 2 ** (len(self.channel_mult) - 1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Predict from ``x`` (N, C, H, W) at ``timesteps`` (N,) (original indices 0..999).

        ``y`` (N,) class labels, given if and only if the model is class-conditional.
        """
        if (y is None) != (self.num_classes is None):
            raise ValueError("pass y if and only if the model is class-conditional")
        height, width = x.shape[-2:]
        multiple = self.size_multiple
        if height % multiple or width % multiple:
            raise ValueError(
                f"input size {height}x{width} is not a multiple of {multiple} "
                f"(2 ** (levels - 1) for {len(self.channel_mult)} levels); crop or pad it"
            )
        if not torch.is_tensor(timesteps):
            timesteps = torch.tensor([timesteps] * x.shape[0], device=x.device)
        elif timesteps.dim() == 0:
            timesteps = timesteps.expand(x.shape[0])

        embedding = timestep_embedding(timesteps, self.model_channels)
        emb = self.time_embed(embedding.to(self.time_embed[0].weight.dtype))
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)

        skips = []
        h = x.type(self.dtype)
        for module in self.input_blocks:
            h = module(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, skips.pop()], dim=1), emb)
        # The head runs in its own dtype (float32 even with use_fp16, as in the release).
        return self.out(h.type(self.out[2].weight.dtype))


def parse_channel_mult(channel_mult, image_size: int) -> tuple:
    if channel_mult is None or (isinstance(channel_mult, str) and not channel_mult.strip()):
        if image_size not in DEFAULT_CHANNEL_MULT:
            raise ValueError(
                f"no default channel_mult for image_size {image_size}; "
                f"give one (e.g. '1,2,2') or use {sorted(DEFAULT_CHANNEL_MULT)}"
            )
        return DEFAULT_CHANNEL_MULT[image_size]
    if isinstance(channel_mult, str):
        return tuple(int(part) for part in channel_mult.split(","))
    if isinstance(channel_mult, (int, float)):
        return (channel_mult,)
    return tuple(channel_mult)


def parse_attention_rates(attention_resolutions, image_size: int) -> tuple[int, ...]:
    """Resolutions such as "32,16,8" to downsample rates ``image_size // resolution``."""
    if isinstance(attention_resolutions, str):
        resolutions = [int(part) for part in attention_resolutions.split(",") if part.strip()]
    elif isinstance(attention_resolutions, int):
        resolutions = [attention_resolutions]
    else:
        resolutions = [int(part) for part in attention_resolutions]
    return tuple(image_size // resolution for resolution in resolutions)


def create_model(
    image_size,
    num_channels,
    num_res_blocks,
    channel_mult="",
    learn_sigma=False,
    class_cond=False,
    use_checkpoint=False,
    attention_resolutions="16",
    num_heads=1,
    num_head_channels=-1,
    num_heads_upsample=-1,
    use_scale_shift_norm=False,
    dropout=0.0,
    resblock_updown=False,
    use_fp16=False,
    use_new_attention_order=False,
    model_path=None,
    attention="auto",
    checkpoint_expected=None,
) -> UNetModel:
    """Build the UNet from the released YAML's keys; load ``model_path`` if given; eval mode.

    ``channel_mult`` "" derives the multipliers from ``image_size`` as guided-diffusion does;
    ``attention_resolutions`` lists feature-map sizes (e.g. "32,16,8"). ``learn_sigma`` doubles
    the output channels (mean and variance). ``use_fp16`` is supported as in the release: the
    torso's convolutions become float16 after loading (see :class:`UNetModel`).

    A non-empty ``model_path`` is loaded with :func:`guided_diffusion.checkpoint.load_checkpoint`; any
    mismatch raises :class:`guided_diffusion.checkpoint.CheckpointError` (never random weights). The
    network is then built on the ``meta`` device and the checkpoint tensors are assigned, so
    the 2.2 GB model is neither randomly initialised nor held twice.
    """
    model_kwargs = dict(
        image_size=image_size,
        in_channels=3,
        model_channels=num_channels,
        out_channels=6 if learn_sigma else 3,
        num_res_blocks=num_res_blocks,
        attention_resolutions=parse_attention_rates(attention_resolutions, image_size),
        dropout=dropout,
        channel_mult=parse_channel_mult(channel_mult, image_size),
        num_classes=NUM_CLASSES if class_cond else None,
        use_checkpoint=use_checkpoint,
        num_heads=num_heads,
        num_head_channels=num_head_channels,
        num_heads_upsample=num_heads_upsample,
        use_scale_shift_norm=use_scale_shift_norm,
        resblock_updown=resblock_updown,
        use_new_attention_order=use_new_attention_order,
        attention=attention,
    )
    if model_path:
        from .checkpoint import load_checkpoint

        with torch.device("meta"):
            model = UNetModel(**model_kwargs)
        if checkpoint_expected is None:
            load_checkpoint(model, model_path, assign=True)
        else:  # what the file should have been, for the error message
            load_checkpoint(model, model_path, assign=True, expected=checkpoint_expected)
        # As guided-diffusion's scripts do: load float32 weights, then convert.
        if use_fp16:
            model.convert_to_fp16()
    else:
        model = UNetModel(use_fp16=use_fp16, **model_kwargs)
    return model.eval()
